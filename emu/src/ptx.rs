//! PTX text to a syntax tree: a tokenizer and a parser for the module structure
//! nvcc emits (directives, variables, `.entry` / `.func` bodies with nested scopes,
//! labels, `.loc`), and for instruction operands. Meaning is given in `decode`.
//!
//! Grammar facts from the PTX ISA, chapters "Syntax" and "Directives": statements
//! end with `;`, labels with `:`, comments are `//` and `/* */`, `{ }` open a
//! scope in which `.reg` names may shadow outer ones.

use std::collections::HashMap;

use crate::error::LoadError;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// Names, opcodes with their modifiers (`ld.global.v4.u32`), directives
    /// (`.reg`), registers (`%r1`, `%tid.x`), labels (`$L__BB0_2`).
    Word(String),
    Int(u64),
    /// `0f3F800000` (f32 bits) or `0d...` (f64 bits), kept as bits.
    F32(u32),
    F64(u64),
    Str(String),
    P(char),
}

struct Lexer<'a> {
    src: &'a [u8],
    at: usize,
    line: u32,
}

fn word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

impl<'a> Lexer<'a> {
    fn tokens(src: &'a str) -> Result<Vec<(Tok, u32)>, LoadError> {
        let mut lx = Lexer { src: src.as_bytes(), at: 0, line: 1 };
        let mut out = Vec::new();
        while let Some(t) = lx.next()? {
            out.push((t, lx.line));
        }
        Ok(out)
    }

    fn err(&self, msg: String) -> LoadError {
        LoadError::Syntax { line: self.line, msg }
    }

    fn next(&mut self) -> Result<Option<Tok>, LoadError> {
        loop {
            let Some(&c) = self.src.get(self.at) else { return Ok(None) };
            match c {
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                c if c.is_ascii_whitespace() => self.at += 1,
                b'/' if self.src.get(self.at + 1) == Some(&b'/') => {
                    while self.src.get(self.at).is_some_and(|&c| c != b'\n') {
                        self.at += 1;
                    }
                }
                b'/' if self.src.get(self.at + 1) == Some(&b'*') => {
                    self.at += 2;
                    loop {
                        match self.src.get(self.at) {
                            None => return Err(self.err("unterminated /* comment".into())),
                            Some(b'*') if self.src.get(self.at + 1) == Some(&b'/') => {
                                self.at += 2;
                                break;
                            }
                            Some(b'\n') => {
                                self.line += 1;
                                self.at += 1;
                            }
                            Some(_) => self.at += 1,
                        }
                    }
                }
                _ => break,
            }
        }
        let start = self.at;
        let c = self.src[start];
        if c == b'"' {
            self.at += 1;
            while self.src.get(self.at).is_some_and(|&c| c != b'"' && c != b'\n') {
                self.at += 1;
            }
            if self.src.get(self.at) != Some(&b'"') {
                return Err(self.err("unterminated string".into()));
            }
            let s = String::from_utf8_lossy(&self.src[start + 1..self.at]).into_owned();
            self.at += 1;
            return Ok(Some(Tok::Str(s)));
        }
        if c.is_ascii_digit() {
            while self.src.get(self.at).is_some_and(|&c| c.is_ascii_alphanumeric()) {
                self.at += 1;
            }
            let text = std::str::from_utf8(&self.src[start..self.at]).unwrap_or("");
            return self.number(text).map(Some);
        }
        if word_char(c) {
            while let Some(&c) = self.src.get(self.at) {
                if word_char(c) {
                    self.at += 1;
                } else if c == b':' && self.src.get(self.at + 1) == Some(&b':') {
                    self.at += 2;
                } else {
                    break;
                }
            }
            let w = String::from_utf8_lossy(&self.src[start..self.at]).into_owned();
            return Ok(Some(Tok::Word(w)));
        }
        if b",;:[]{}()<>+-|!@=".contains(&c) {
            self.at += 1;
            return Ok(Some(Tok::P(c as char)));
        }
        Err(self.err(format!("unexpected character {:?}", c as char)))
    }

    fn number(&self, t: &str) -> Result<Tok, LoadError> {
        let bad = || self.err(format!("malformed number {t:?}"));
        let lower = t.to_ascii_lowercase();
        if let Some(h) = lower.strip_prefix("0f").filter(|h| h.len() == 8) {
            return u32::from_str_radix(h, 16).map(Tok::F32).map_err(|_| bad());
        }
        if let Some(h) = lower.strip_prefix("0d").filter(|h| h.len() == 16) {
            return u64::from_str_radix(h, 16).map(Tok::F64).map_err(|_| bad());
        }
        let body = lower.strip_suffix('u').unwrap_or(&lower);
        let v = if let Some(h) = body.strip_prefix("0x") {
            u64::from_str_radix(h, 16)
        } else if let Some(b) = body.strip_prefix("0b") {
            u64::from_str_radix(b, 2)
        } else if body.len() > 1 && body.starts_with('0') {
            u64::from_str_radix(&body[1..], 8)
        } else {
            body.parse::<u64>()
        };
        v.map(Tok::Int).map_err(|_| bad())
    }
}

/// An operand as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A register or a special register, by name (`%r1`, `%tid.x`).
    Reg(String),
    /// An integer immediate, two's complement in 64 bits.
    Int(i64),
    F32(u32),
    F64(u64),
    /// A variable, function or label name.
    Sym(String),
    /// `[base+offset]`.
    Addr(Box<Operand>, i64),
    /// `{a, b, ...}`.
    Vector(Vec<Operand>),
    /// `d|p`: a destination and its predicate.
    Pair(Box<Operand>, Box<Operand>),
    /// `!p`.
    Not(Box<Operand>),
    /// `(a, b)` in a call.
    List(Vec<Operand>),
    /// `_`.
    Sink,
}

#[derive(Clone, Debug)]
pub struct Instruction {
    /// `@p` / `@!p`.
    pub guard: Option<(String, bool)>,
    /// The opcode with its modifiers, split at dots: `["ld", "global", "v4", "u32"]`.
    pub op: Vec<String>,
    pub operands: Vec<Operand>,
    /// Line in the PTX text.
    pub line: u32,
    /// Source position from the last `.loc`: (file index, line).
    pub loc: Option<(u32, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Space {
    Reg,
    Param,
    Shared,
    Local,
    Global,
    Const,
}

/// `.reg .b32 %r<10>;`, `.shared .align 4 .b8 buf[128];`, `.param .u64 p`...
#[derive(Clone, Debug)]
pub struct VarDecl {
    pub space: Space,
    pub ty: String,
    pub align: Option<u32>,
    pub names: Vec<String>,
    /// `%r<10>`: names %r0..%r9.
    pub range: Option<u32>,
    /// Array extents (`[128]`, `[]` as 0).
    pub dims: Vec<u64>,
    pub extern_: bool,
    /// `= {1, 2, ...}` or `= 5`, as integers (bytes for .b8 arrays).
    pub init: Vec<Operand>,
    pub line: u32,
}

impl VarDecl {
    /// Size of one declared variable in bytes.
    pub fn bytes(&self) -> Option<u64> {
        let elem = type_bytes(&self.ty)? as u64;
        self.dims.iter().try_fold(elem, |acc, &d| acc.checked_mul(d))
    }
}

/// Size in bytes of a PTX fundamental type name such as `.u32` or `.b8`.
pub fn type_bytes(ty: &str) -> Option<u32> {
    Some(match ty.trim_start_matches('.') {
        "pred" => 1,
        "b8" | "u8" | "s8" => 1,
        "b16" | "u16" | "s16" | "f16" | "bf16" => 2,
        "b32" | "u32" | "s32" | "f32" | "f16x2" | "bf16x2" => 4,
        "b64" | "u64" | "s64" | "f64" => 8,
        "b128" => 16,
        _ => return None,
    })
}

#[derive(Clone, Debug)]
pub enum Stmt {
    Inst(Instruction),
    Label(String, u32),
    Decl(VarDecl),
    Open,
    Close,
}

#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    pub entry: bool,
    pub params: Vec<VarDecl>,
    pub rets: Vec<VarDecl>,
    /// None for a prototype (`.func f(...);`).
    pub body: Option<Vec<Stmt>>,
    /// `.maxntid`, `.reqntid` as (x, y, z).
    pub maxntid: Option<[u32; 3]>,
    pub reqntid: Option<[u32; 3]>,
    pub line: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Module {
    pub version: Option<String>,
    pub target: Vec<String>,
    pub address_size: Option<u32>,
    pub globals: Vec<VarDecl>,
    pub functions: Vec<Function>,
    /// `.file` index to path.
    pub files: HashMap<u32, String>,
}

struct Parser {
    toks: Vec<(Tok, u32)>,
    at: usize,
    loc: Option<(u32, u32)>,
}

pub fn parse(src: &str) -> Result<Module, LoadError> {
    let mut p = Parser { toks: Lexer::tokens(src)?, at: 0, loc: None };
    p.module()
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }
    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.at + k).map(|t| &t.0)
    }
    fn line(&self) -> u32 {
        self.toks.get(self.at).or(self.toks.last()).map_or(1, |t| t.1)
    }
    fn err(&self, msg: impl Into<String>) -> LoadError {
        LoadError::Syntax { line: self.line(), msg: msg.into() }
    }
    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        t
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::P(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), LoadError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected `{c}`, found {}", self.describe())))
        }
    }
    fn describe(&self) -> String {
        match self.peek() {
            None => "end of file".into(),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::P(c)) => format!("`{c}`"),
            Some(t) => format!("{t:?}"),
        }
    }
    fn word(&mut self) -> Result<String, LoadError> {
        match self.bump() {
            Some(Tok::Word(w)) => Ok(w),
            _ => {
                self.at -= 1;
                Err(self.err(format!("expected a name, found {}", self.describe())))
            }
        }
    }
    fn int(&mut self) -> Result<u64, LoadError> {
        match self.bump() {
            Some(Tok::Int(v)) => Ok(v),
            _ => {
                self.at -= 1;
                Err(self.err(format!("expected an integer, found {}", self.describe())))
            }
        }
    }
    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn module(&mut self) -> Result<Module, LoadError> {
        let mut m = Module::default();
        while let Some(t) = self.peek().cloned() {
            let Tok::Word(w) = t else {
                return Err(self.err(format!("unexpected {} at module level", self.describe())));
            };
            match w.as_str() {
                ".version" => {
                    self.at += 1;
                    let major = self.int()?;
                    let minor = match self.bump() {
                        Some(Tok::Word(w)) if w.starts_with('.') => w[1..].to_string(),
                        _ => return Err(self.err("malformed .version")),
                    };
                    m.version = Some(format!("{major}.{minor}"));
                }
                ".target" => {
                    self.at += 1;
                    m.target.push(self.word()?);
                    while self.eat(',') {
                        m.target.push(self.word()?);
                    }
                }
                ".address_size" => {
                    self.at += 1;
                    m.address_size = Some(self.int()? as u32);
                }
                ".file" => {
                    self.at += 1;
                    let idx = self.int()? as u32;
                    match self.bump() {
                        Some(Tok::Str(s)) => {
                            m.files.insert(idx, s);
                        }
                        _ => return Err(self.err("malformed .file")),
                    }
                    // Optional timestamp and size.
                    while self.eat(',') {
                        self.int()?;
                    }
                }
                ".section" => {
                    // Debug sections: skipped whole, they carry no semantics.
                    self.at += 1;
                    self.word()?;
                    self.expect('{')?;
                    let mut depth = 1;
                    while depth > 0 {
                        match self.bump() {
                            Some(Tok::P('{')) => depth += 1,
                            Some(Tok::P('}')) => depth -= 1,
                            Some(_) => {}
                            None => return Err(self.err("unterminated .section")),
                        }
                    }
                }
                _ => self.top_decl(&mut m)?,
            }
        }
        Ok(m)
    }

    /// A function or a module-scope variable, with its linkage prefixes.
    fn top_decl(&mut self, m: &mut Module) -> Result<(), LoadError> {
        let mut extern_ = false;
        while let Some(w) = self.peek_word() {
            match w {
                ".visible" | ".weak" | ".common" => self.at += 1,
                ".extern" => {
                    extern_ = true;
                    self.at += 1
                }
                _ => break,
            }
        }
        match self.peek_word() {
            Some(".entry") | Some(".func") => {
                let f = self.function()?;
                m.functions.push(f);
                Ok(())
            }
            Some(".global") | Some(".const") | Some(".shared") => {
                let mut d = self.var_decl()?;
                d.extern_ |= extern_;
                self.expect(';')?;
                m.globals.push(d);
                Ok(())
            }
            _ => Err(self.err(format!("unsupported module-level statement {}", self.describe()))),
        }
    }

    fn function(&mut self) -> Result<Function, LoadError> {
        let line = self.line();
        let entry = self.word()? == ".entry";
        let mut rets = Vec::new();
        if !entry && self.peek() == Some(&Tok::P('(')) {
            rets = self.param_list()?;
        }
        let name = self.word()?;
        let params = if self.peek() == Some(&Tok::P('(')) { self.param_list()? } else { Vec::new() };
        let mut f = Function { name, entry, params, rets, body: None, maxntid: None, reqntid: None, line };
        loop {
            match self.peek().cloned() {
                Some(Tok::P(';')) => {
                    self.at += 1;
                    return Ok(f);
                }
                Some(Tok::P('{')) => break,
                Some(Tok::Word(w)) => {
                    self.at += 1;
                    match w.as_str() {
                        ".maxntid" => f.maxntid = Some(self.dims3()?),
                        ".reqntid" => f.reqntid = Some(self.dims3()?),
                        ".minnctapersm" | ".maxnreg" | ".maxnctapersm" | ".maxclusterrank" => {
                            self.int()?;
                        }
                        ".noreturn" => {}
                        _ => return Err(self.err(format!("unsupported function directive `{w}`"))),
                    }
                }
                _ => return Err(self.err(format!("unexpected {} in a function header", self.describe()))),
            }
        }
        f.body = Some(self.body()?);
        Ok(f)
    }

    fn dims3(&mut self) -> Result<[u32; 3], LoadError> {
        let mut d = [1u32; 3];
        d[0] = self.int()? as u32;
        for k in 1..3 {
            if !self.eat(',') {
                break;
            }
            d[k] = self.int()? as u32;
        }
        Ok(d)
    }

    fn param_list(&mut self) -> Result<Vec<VarDecl>, LoadError> {
        self.expect('(')?;
        let mut out = Vec::new();
        if self.eat(')') {
            return Ok(out);
        }
        loop {
            out.push(self.var_decl()?);
            if self.eat(')') {
                return Ok(out);
            }
            self.expect(',')?;
        }
    }

    /// `.space [.align N] [.ptr .space .align N] .type name[<N>][dims] [= init]`
    /// (or several comma-separated names for `.reg`).
    fn var_decl(&mut self) -> Result<VarDecl, LoadError> {
        let line = self.line();
        let space = match self.word()?.as_str() {
            ".reg" => Space::Reg,
            ".param" => Space::Param,
            ".shared" => Space::Shared,
            ".local" => Space::Local,
            ".global" => Space::Global,
            ".const" => Space::Const,
            w => return Err(LoadError::Syntax { line, msg: format!("unsupported state space `{w}`") }),
        };
        let mut d = VarDecl {
            space,
            ty: String::new(),
            align: None,
            names: Vec::new(),
            range: None,
            dims: Vec::new(),
            extern_: false,
            init: Vec::new(),
            line,
        };
        while let Some(w) = self.peek_word().map(str::to_string) {
            if !w.starts_with('.') {
                break;
            }
            self.at += 1;
            match w.as_str() {
                ".align" => d.align = Some(self.int()? as u32),
                ".ptr" | ".global" | ".shared" | ".const" | ".local" | ".v2" | ".v4" => {
                    if w == ".v2" || w == ".v4" {
                        return Err(self.err(format!("vector variables ({w}) are not implemented")));
                    }
                }
                t if type_bytes(t).is_some() => d.ty = t.to_string(),
                _ => return Err(self.err(format!("unsupported variable attribute `{w}`"))),
            }
        }
        if d.ty.is_empty() {
            return Err(self.err("variable declaration without a type"));
        }
        loop {
            d.names.push(self.word()?);
            if self.eat('<') {
                d.range = Some(self.int()? as u32);
                self.expect('>')?;
            }
            while self.eat('[') {
                if self.eat(']') {
                    d.dims.push(0);
                } else {
                    d.dims.push(self.int()?);
                    self.expect(']')?;
                }
            }
            if !(d.space == Space::Reg && self.eat(',')) {
                break;
            }
        }
        if d.range.is_some() && d.names.len() > 1 {
            // One range per declaration is all VarDecl holds (nvcc never mixes them).
            return Err(LoadError::Syntax {
                line,
                msg: "a `.reg` line that mixes a `<N>` range with other names".into(),
            });
        }
        if self.eat('=') {
            if self.eat('{') {
                loop {
                    d.init.push(self.operand()?);
                    if self.eat('}') {
                        break;
                    }
                    self.expect(',')?;
                }
            } else {
                d.init.push(self.operand()?);
            }
        }
        Ok(d)
    }

    fn body(&mut self) -> Result<Vec<Stmt>, LoadError> {
        self.expect('{')?;
        let mut out = Vec::new();
        let mut depth = 1;
        loop {
            let line = self.line();
            match self.peek().cloned() {
                None => return Err(self.err("unterminated function body")),
                Some(Tok::P('{')) => {
                    self.at += 1;
                    depth += 1;
                    out.push(Stmt::Open);
                }
                Some(Tok::P('}')) => {
                    self.at += 1;
                    depth -= 1;
                    if depth == 0 {
                        return Ok(out);
                    }
                    out.push(Stmt::Close);
                }
                Some(Tok::Word(w)) if self.peek_at(1) == Some(&Tok::P(':')) && !w.starts_with('.') => {
                    self.at += 2;
                    out.push(Stmt::Label(w, line));
                }
                Some(Tok::Word(w)) if w == ".loc" => {
                    self.at += 1;
                    let file = self.int()? as u32;
                    let l = self.int()? as u32;
                    self.int()?;
                    // `, function_name $L__info_stringN, inlined_at f l c`: the
                    // position inside the inlined body is the one we report.
                    while self.eat(',') {
                        let key = self.word()?;
                        if key == "inlined_at" {
                            self.int()?;
                            self.int()?;
                            self.int()?;
                        } else {
                            self.word()?;
                        }
                    }
                    self.loc = (l != 0).then_some((file, l)).or(self.loc);
                }
                Some(Tok::Word(w)) if w == ".pragma" => {
                    self.at += 1;
                    self.bump();
                    self.expect(';')?;
                }
                Some(Tok::Word(w))
                    if matches!(w.as_str(), ".reg" | ".shared" | ".local" | ".param" | ".const") =>
                {
                    let d = self.var_decl()?;
                    self.expect(';')?;
                    out.push(Stmt::Decl(d));
                }
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    return Err(self.err(format!("unsupported directive `{w}` in a function body")));
                }
                Some(_) => out.push(Stmt::Inst(self.instruction()?)),
            }
        }
    }

    fn instruction(&mut self) -> Result<Instruction, LoadError> {
        let line = self.line();
        let mut guard = None;
        if self.eat('@') {
            let neg = self.eat('!');
            guard = Some((self.word()?, neg));
        }
        let opcode = self.word()?;
        let op: Vec<String> = opcode.split('.').map(str::to_string).collect();
        let mut operands = Vec::new();
        if !self.eat(';') {
            loop {
                operands.push(self.operand()?);
                if self.eat(';') {
                    break;
                }
                if !self.eat(',') {
                    return Err(self.err(format!(
                        "expected `,` or `;` after an operand of {opcode}, found {}",
                        self.describe()
                    )));
                }
            }
        }
        Ok(Instruction { guard, op, operands, line, loc: self.loc })
    }

    fn operand(&mut self) -> Result<Operand, LoadError> {
        let first = self.simple()?;
        if self.eat('|') {
            let p = self.simple()?;
            return Ok(Operand::Pair(Box::new(first), Box::new(p)));
        }
        Ok(first)
    }

    fn simple(&mut self) -> Result<Operand, LoadError> {
        match self.bump() {
            Some(Tok::Word(w)) if w == "_" => Ok(Operand::Sink),
            Some(Tok::Word(w)) if w.starts_with('%') => Ok(Operand::Reg(w)),
            Some(Tok::Word(w)) => Ok(Operand::Sym(w)),
            Some(Tok::Int(v)) => Ok(Operand::Int(v as i64)),
            Some(Tok::F32(b)) => Ok(Operand::F32(b)),
            Some(Tok::F64(b)) => Ok(Operand::F64(b)),
            Some(Tok::P('-')) => match self.bump() {
                Some(Tok::Int(v)) => Ok(Operand::Int((v as i64).wrapping_neg())),
                _ => Err(self.err("expected a number after `-`")),
            },
            Some(Tok::P('!')) => Ok(Operand::Not(Box::new(self.simple()?))),
            Some(Tok::P('{')) => {
                let mut v = Vec::new();
                loop {
                    v.push(self.simple()?);
                    if self.eat('}') {
                        return Ok(Operand::Vector(v));
                    }
                    self.expect(',')?;
                }
            }
            Some(Tok::P('(')) => {
                let mut v = Vec::new();
                if self.eat(')') {
                    return Ok(Operand::List(v));
                }
                loop {
                    v.push(self.simple()?);
                    if self.eat(')') {
                        return Ok(Operand::List(v));
                    }
                    self.expect(',')?;
                }
            }
            Some(Tok::P('[')) => {
                let base = self.simple()?;
                let mut off: i64 = 0;
                while !self.eat(']') {
                    let neg = if self.eat('+') {
                        self.eat('-')
                    } else if self.eat('-') {
                        true
                    } else {
                        return Err(self.err(format!("malformed address, found {}", self.describe())));
                    };
                    let v = self.int()? as i64;
                    off = off.wrapping_add(if neg { v.wrapping_neg() } else { v });
                }
                Ok(Operand::Addr(Box::new(base), off))
            }
            _ => {
                self.at -= 1;
                Err(self.err(format!("expected an operand, found {}", self.describe())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_kernel() {
        let src = r#"
.version 9.0
.target sm_90
.address_size 64
.global .align 4 .b8 tab[8] = {1, 2, 3, 4, 5, 6, 7, 8};
.visible .entry k(
    .param .u64 k_param_0,
    .param .u32 k_param_1
)
.maxntid 128, 1, 1
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .shared .align 16 .b8 buf[256];
    .loc 1 10 3
    ld.param.u32 %r1, [k_param_1];
    @!%p1 bra $L__BB0_1;
    { .reg .u32 %a;
    mov.b64 {%r1, %r2}, 0d3FF0000000000000;
    }
$L__BB0_1:
    shfl.sync.bfly.b32 %r2|%p1, %r1, 1, 31, -1;
    st.shared.v2.f32 [buf+-8], {%r1, %r2};
    ret;
}
.file 1 "/k.cu"
"#;
        let m = parse(src).unwrap();
        assert_eq!(m.version.as_deref(), Some("9.0"));
        assert_eq!(m.files[&1], "/k.cu");
        assert_eq!(m.globals[0].init.len(), 8);
        let f = &m.functions[0];
        assert!(f.entry);
        assert_eq!(f.maxntid, Some([128, 1, 1]));
        assert_eq!(f.params.len(), 2);
        let body = f.body.as_ref().unwrap();
        let insts: Vec<&Instruction> = body
            .iter()
            .filter_map(|s| match s {
                Stmt::Inst(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(insts[0].loc, Some((1, 10)));
        assert_eq!(insts[1].guard, Some(("%p1".into(), true)));
        assert_eq!(insts[3].op, ["shfl", "sync", "bfly", "b32"]);
        assert_eq!(insts[3].operands[4], Operand::Int(-1));
        assert_eq!(insts[4].operands[0], Operand::Addr(Box::new(Operand::Sym("buf".into())), -8));
        assert!(body.iter().any(|s| matches!(s, Stmt::Label(l, _) if l == "$L__BB0_1")));
    }

    #[test]
    fn reports_the_line_of_a_syntax_error() {
        let e =
            parse(".version 9.0\n.target sm_90\n.entry k()\n{\n  add.s32 %r1, %r2 %r3;\n}\n").unwrap_err();
        match e {
            LoadError::Syntax { line, .. } => assert_eq!(line, 5),
            e => panic!("{e:?}"),
        }
    }
}
