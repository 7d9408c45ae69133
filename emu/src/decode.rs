//! Syntax tree to `Program`: one per entry point, holding the entry's code and
//! every `.func` it reaches. Registers become slots (scoped, so an inline-asm
//! block's `%r0` is its own), labels become instruction indices, variables become
//! addresses in their state space, and each opcode with its modifiers picks its
//! exec function. Any modifier the emulator does not implement is an error here,
//! naming it and its PTX line.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::LoadError;
use crate::exec::memops::{self, CPARAM_BASE, GLOBAL, LOCAL, PARAM, SHARED};
use crate::exec::{alu, fp, warpops};
use crate::ir::{CallSite, Class, Ctrl, Inst, Need, Param, Program, Special, Ty, NONE};
use crate::ptx::{self, Operand, Space, Stmt};

#[derive(Clone, Debug)]
enum Var {
    Reg {
        slot: u32,
        bits: u32,
    },
    Pred(u32),
    /// An address in a state space, usable as an immediate.
    Addr(u64),
}

fn align_up(v: usize, a: usize) -> usize {
    v.div_ceil(a.max(1)) * a.max(1)
}

/// The device addresses of a module's `.global` / `.const` variables.
pub type Globals = HashMap<String, u64>;

struct Builder<'m> {
    module: &'m ptx::Module,
    globals: &'m Globals,
    insts: Vec<Inst>,
    text: Vec<String>,
    nregs: u32,
    npreds: u32,
    consts: HashMap<u64, u32>,
    specials: HashMap<String, u32>,
    special_list: Vec<(u32, Special)>,
    cc: u32,
    sink: u32,
    sink_pred: u32,
    /// Module-scope shared variables, laid out on first use.
    shared: HashMap<String, u64>,
    shared_vars: Vec<(String, usize, usize)>,
    shared_top: usize,
    dyn_vars: Vec<String>,
    dyn_align: usize,
    local_top: usize,
    cparam_top: usize,
    calls: Vec<CallSite>,
    /// (call site, callee name, caller arg addresses, caller ret addresses).
    pending: Vec<(usize, String, Vec<u64>, Vec<u64>, u32)>,
    /// Callee name -> (start pc, formal param addresses, ret addresses).
    funcs: HashMap<String, (u32, Vec<(u64, u32)>, Vec<(u64, u32)>)>,
    scopes: Vec<HashMap<String, Var>>,
    labels: HashMap<String, u32>,
    params: Vec<Param>,
    param_bytes: usize,
}

fn inv(line: u32, msg: impl Into<String>) -> LoadError {
    LoadError::Invalid { line, msg: msg.into() }
}

fn unsup(line: u32, what: impl Into<String>) -> LoadError {
    LoadError::Unsupported { line, what: what.into() }
}

/// Decodes every entry point of a module.
pub fn decode_module(m: &ptx::Module, globals: &Globals) -> Result<Vec<Program>, LoadError> {
    let files = Arc::new(m.files.clone());
    m.functions
        .iter()
        .filter(|f| f.entry && f.body.is_some())
        .map(|f| decode_entry(m, f, globals, files.clone()))
        .collect()
}

fn decode_entry(
    m: &ptx::Module,
    entry: &ptx::Function,
    globals: &Globals,
    files: Arc<HashMap<u32, String>>,
) -> Result<Program, LoadError> {
    let mut b = Builder {
        module: m,
        globals,
        insts: Vec::new(),
        text: Vec::new(),
        nregs: 0,
        npreds: 0,
        consts: HashMap::new(),
        specials: HashMap::new(),
        special_list: Vec::new(),
        cc: 0,
        sink: 0,
        sink_pred: 0,
        shared: HashMap::new(),
        shared_vars: Vec::new(),
        shared_top: 0,
        dyn_vars: Vec::new(),
        dyn_align: 1,
        local_top: 0,
        cparam_top: 0,
        calls: Vec::new(),
        pending: Vec::new(),
        funcs: HashMap::new(),
        scopes: Vec::new(),
        labels: HashMap::new(),
        params: Vec::new(),
        param_bytes: 0,
    };
    b.cc = b.reg();
    b.sink = b.reg();
    b.sink_pred = b.pred();
    // Lay out every shared variable the entry and its callees can name, before
    // any code is decoded, so that dynamic shared memory's start is known.
    let reach = reachable(m, entry)?;
    b.layout_shared(&reach)?;

    // The entry's parameters, in the launch's parameter buffer.
    for p in &entry.params {
        let size =
            p.bytes().ok_or_else(|| inv(p.line, format!("parameter {} has no size", p.names[0])))? as usize;
        let align = p.align.map_or(size.clamp(1, 8), |a| a as usize);
        let off = align_up(b.param_bytes, align);
        b.param_bytes = off + size;
        b.params.push(Param { name: p.names[0].clone(), offset: off, size, align });
    }
    let mut top = HashMap::new();
    for p in &b.params {
        top.insert(p.name.clone(), Var::Addr(p.offset as u64));
    }
    b.scopes.push(top);
    b.function(entry)?;
    b.scopes.pop();

    // Callees, each once, after the entry.
    let mut queue: Vec<String> = b.pending.iter().map(|p| p.1.clone()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let f =
            m.functions.iter().find(|f| f.name == name && f.body.is_some()).ok_or_else(|| {
                inv(entry.line, format!("call to {name}, which has no body in this module"))
            })?;
        let before = b.pending.len();
        b.callee(f)?;
        queue.extend(b.pending[before..].iter().map(|p| p.1.clone()));
    }
    for (cs, name, args, rets, line) in std::mem::take(&mut b.pending) {
        let (start, formals, fret) =
            b.funcs.get(&name).cloned().ok_or_else(|| inv(line, format!("unknown function {name}")))?;
        if args.len() != formals.len() || rets.len() > fret.len() {
            return Err(inv(
                line,
                format!(
                    "call to {name} with {} arguments and {} results; it takes {} and gives {}",
                    args.len(),
                    rets.len(),
                    formals.len(),
                    fret.len()
                ),
            ));
        }
        let site = &mut b.calls[cs];
        site.target = start;
        for (a, (f, len)) in args.iter().zip(&formals) {
            site.args.push(((*a - CPARAM_BASE) as u32, (*f - CPARAM_BASE) as u32, *len));
        }
        for (r, (f, len)) in rets.iter().zip(&fret) {
            site.rets.push(((*f - CPARAM_BASE) as u32, (*r - CPARAM_BASE) as u32, *len));
        }
    }
    let dyn_offset = align_up(b.shared_top, b.dyn_align);
    let mut shared_vars = b.shared_vars.clone();
    for name in &b.dyn_vars {
        shared_vars.push((name.clone(), dyn_offset, usize::MAX - dyn_offset));
    }
    Ok(Program {
        name: entry.name.clone(),
        insts: b.insts,
        text: b.text,
        nregs: b.nregs as usize,
        npreds: b.npreds as usize,
        consts: b.consts.iter().map(|(&v, &s)| (s, v)).collect(),
        specials: b.special_list,
        cc: b.cc,
        params: b.params,
        param_bytes: b.param_bytes,
        shared_static: b.shared_top,
        shared_vars,
        dyn_offset,
        local_bytes: b.local_top,
        call_param_bytes: b.cparam_top,
        calls: b.calls,
        maxntid: entry.maxntid,
        reqntid: entry.reqntid,
        files,
    })
}

/// Names of the entry and every function it calls, transitively; a recursive
/// call is refused (callee registers have fixed slots).
fn reachable<'m>(m: &'m ptx::Module, entry: &'m ptx::Function) -> Result<Vec<&'m ptx::Function>, LoadError> {
    fn callees(f: &ptx::Function) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for s in f.body.iter().flatten() {
            if let Stmt::Inst(i) = s {
                if i.op[0] == "call" {
                    if let Some(Operand::Sym(n)) = i.operands.iter().find(|o| matches!(o, Operand::Sym(_))) {
                        out.push((n.clone(), i.line));
                    }
                }
            }
        }
        out
    }
    fn walk<'m>(
        m: &'m ptx::Module,
        f: &'m ptx::Function,
        stack: &mut Vec<String>,
        out: &mut Vec<&'m ptx::Function>,
    ) -> Result<(), LoadError> {
        if out.iter().any(|g| g.name == f.name) {
            return Ok(());
        }
        out.push(f);
        stack.push(f.name.clone());
        for (name, line) in callees(f) {
            if stack.contains(&name) {
                return Err(unsup(line, format!("recursive call to {name}")));
            }
            let g = m
                .functions
                .iter()
                .find(|g| g.name == name && g.body.is_some())
                .ok_or_else(|| inv(line, format!("call to {name}, which has no body in this module")))?;
            walk(m, g, stack, out)?;
        }
        stack.pop();
        Ok(())
    }
    let mut out = Vec::new();
    walk(m, entry, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn syms_in(o: &Operand, out: &mut HashSet<String>) {
    match o {
        Operand::Sym(s) => {
            out.insert(s.clone());
        }
        Operand::Addr(b, _) | Operand::Not(b) => syms_in(b, out),
        Operand::Vector(v) | Operand::List(v) => v.iter().for_each(|o| syms_in(o, out)),
        Operand::Pair(a, b) => {
            syms_in(a, out);
            syms_in(b, out);
        }
        _ => {}
    }
}

impl Builder<'_> {
    fn reg(&mut self) -> u32 {
        self.nregs += 1;
        self.nregs - 1
    }
    fn pred(&mut self) -> u32 {
        self.npreds += 1;
        self.npreds - 1
    }

    fn konst(&mut self, v: u64) -> u32 {
        if let Some(&s) = self.consts.get(&v) {
            return s;
        }
        let s = self.reg();
        self.consts.insert(v, s);
        s
    }

    fn layout_shared(&mut self, reach: &[&ptx::Function]) -> Result<(), LoadError> {
        let mut used = HashSet::new();
        for f in reach {
            for s in f.body.iter().flatten() {
                match s {
                    Stmt::Inst(i) => i.operands.iter().for_each(|o| syms_in(o, &mut used)),
                    Stmt::Decl(d) if d.space == Space::Shared => {
                        self.place_shared(d)?;
                    }
                    _ => {}
                }
            }
        }
        for d in self.module.globals.iter().filter(|d| d.space == Space::Shared) {
            if d.names.iter().any(|n| used.contains(n)) {
                self.place_shared(d)?;
            }
        }
        Ok(())
    }

    fn place_shared(&mut self, d: &ptx::VarDecl) -> Result<(), LoadError> {
        let align = d.align.unwrap_or(1).max(ptx::type_bytes(&d.ty).unwrap_or(1)) as usize;
        for name in &d.names {
            if self.shared.contains_key(name) {
                continue;
            }
            if d.extern_ || d.dims.first() == Some(&0) {
                self.dyn_vars.push(name.clone());
                self.dyn_align = self.dyn_align.max(align);
                // Patched into the dynamic area's start below: decode reads it
                // through `shared_addr`.
                self.shared.insert(name.clone(), u64::MAX);
                continue;
            }
            let size =
                d.bytes().ok_or_else(|| inv(d.line, format!("shared variable {name} has no size")))? as usize;
            let off = align_up(self.shared_top, align);
            self.shared_top = off + size;
            self.shared.insert(name.clone(), off as u64);
            self.shared_vars.push((name.clone(), off, size));
        }
        Ok(())
    }

    fn shared_addr(&self, name: &str) -> Option<u64> {
        let v = *self.shared.get(name)?;
        Some(if v == u64::MAX { align_up(self.shared_top, self.dyn_align) as u64 } else { v })
    }

    fn lookup(&self, name: &str) -> Option<Var> {
        for s in self.scopes.iter().rev() {
            if let Some(v) = s.get(name) {
                return Some(v.clone());
            }
        }
        if let Some(a) = self.shared_addr(name) {
            return Some(Var::Addr(a));
        }
        self.globals.get(name).map(|&a| Var::Addr(a))
    }

    fn declare(&mut self, d: &ptx::VarDecl) -> Result<(), LoadError> {
        let scope = self.scopes.len() - 1;
        match d.space {
            Space::Reg => {
                if d.range.is_some() && d.names.len() > 1 {
                    // The syntax tree keeps one `<N>` per declaration.
                    return Err(unsup(d.line, "a .reg declaration listing several names with a <N> range"));
                }
                let names: Vec<String> = match d.range {
                    Some(n) => (0..n).map(|k| format!("{}{k}", d.names[0])).collect(),
                    None => d.names.clone(),
                };
                let ty = d.ty.trim_start_matches('.');
                for n in names {
                    let v = if ty == "pred" {
                        Var::Pred(self.pred())
                    } else {
                        let bits = ptx::type_bytes(ty)
                            .ok_or_else(|| unsup(d.line, format!("register type .{ty}")))?
                            * 8;
                        Var::Reg { slot: self.reg(), bits }
                    };
                    self.scopes[scope].insert(n, v);
                }
            }
            Space::Shared => {
                // Laid out already; a nested declaration is visible in its scope.
                for n in &d.names {
                    let a = self
                        .shared_addr(n)
                        .ok_or_else(|| inv(d.line, format!("shared variable {n} was not laid out")))?;
                    self.scopes[scope].insert(n.clone(), Var::Addr(a));
                }
            }
            Space::Local => {
                let size = d.bytes().ok_or_else(|| inv(d.line, "local variable without a size"))? as usize;
                let align = d.align.unwrap_or(8) as usize;
                let off = align_up(self.local_top, align);
                self.local_top = off + size;
                self.scopes[scope].insert(d.names[0].clone(), Var::Addr(off as u64));
            }
            Space::Param => {
                let a = self.cparam(d)?;
                self.scopes[scope].insert(d.names[0].clone(), Var::Addr(a));
            }
            _ => return Err(unsup(d.line, format!("{:?} variable inside a function", d.space))),
        }
        Ok(())
    }

    /// A `.param` variable of a call sequence or a `.func`: per-lane memory.
    fn cparam(&mut self, d: &ptx::VarDecl) -> Result<u64, LoadError> {
        let size = d.bytes().ok_or_else(|| inv(d.line, "parameter without a size"))? as usize;
        let align = d.align.map_or(size.clamp(1, 8), |a| a as usize);
        let off = align_up(self.cparam_top, align);
        self.cparam_top = off + size;
        Ok(CPARAM_BASE + off as u64)
    }

    fn callee(&mut self, f: &ptx::Function) -> Result<(), LoadError> {
        let mut scope = HashMap::new();
        let mut formals = Vec::new();
        let mut rets = Vec::new();
        for p in &f.params {
            let a = self.cparam(p)?;
            formals.push((a, p.bytes().unwrap_or(0) as u32));
            scope.insert(p.names[0].clone(), Var::Addr(a));
        }
        for p in &f.rets {
            let a = self.cparam(p)?;
            rets.push((a, p.bytes().unwrap_or(0) as u32));
            scope.insert(p.names[0].clone(), Var::Addr(a));
        }
        self.funcs.insert(f.name.clone(), (self.insts.len() as u32, formals, rets));
        self.scopes.push(scope);
        self.function(f)?;
        self.scopes.pop();
        Ok(())
    }

    fn function(&mut self, f: &ptx::Function) -> Result<(), LoadError> {
        let body = f.body.as_ref().expect("functions with bodies only");
        // Labels first: a branch may jump forward.
        self.labels.clear();
        let mut pc = self.insts.len() as u32;
        for s in body {
            match s {
                Stmt::Inst(_) => pc += 1,
                Stmt::Label(l, line) => {
                    if self.labels.insert(l.clone(), pc).is_some() {
                        return Err(inv(*line, format!("label {l} defined twice")));
                    }
                }
                _ => {}
            }
        }
        self.scopes.push(HashMap::new());
        for s in body {
            match s {
                Stmt::Open => self.scopes.push(HashMap::new()),
                Stmt::Close => {
                    self.scopes.pop();
                }
                Stmt::Decl(d) => self.declare(d)?,
                Stmt::Label(..) => {}
                Stmt::Inst(i) => {
                    let inst = self.instruction(i)?;
                    self.insts.push(inst);
                    self.text.push(render(i));
                }
            }
        }
        self.scopes.pop();
        // A function that falls off its end returns (PTX requires a ret or exit;
        // the emulator makes the missing one explicit).
        if self.insts.last().is_none_or(|i| !matches!(i.ctrl, Ctrl::Ret | Ctrl::Exit | Ctrl::Bra(_))) {
            let mut r = self.blank(f.line, None);
            r.ctrl = Ctrl::Ret;
            r.class = Class::Control;
            self.insts.push(r);
            self.text.push("ret; (implicit)".into());
        }
        Ok(())
    }

    fn blank(&self, line: u32, loc: Option<(u32, u32)>) -> Inst {
        Inst {
            exec: noop,
            ctrl: Ctrl::Op,
            class: Class::Int,
            guard: None,
            d: [NONE; 4],
            s: [NONE; 10],
            p: [NONE; 2],
            imm: 0,
            aux: 0,
            line,
            loc,
        }
    }

    // Operands.

    fn special(&mut self, name: &str, line: u32) -> Result<u32, LoadError> {
        if let Some(&s) = self.specials.get(name) {
            return Ok(s);
        }
        let dim = |s: &str| match s {
            "x" => Some(0u8),
            "y" => Some(1),
            "z" => Some(2),
            _ => None,
        };
        let (base, comp) = name.split_once('.').map_or((name, None), |(b, c)| (b, dim(c)));
        let sp = match (base, comp) {
            ("%tid", Some(k)) => Special::Tid(k),
            ("%ntid", Some(k)) => Special::Ntid(k),
            ("%ctaid", Some(k)) => Special::Ctaid(k),
            ("%nctaid", Some(k)) => Special::Nctaid(k),
            ("%laneid", None) => Special::LaneId,
            ("%warpid", None) => Special::WarpId,
            _ => return Err(unsup(line, format!("special register {name}"))),
        };
        let s = self.reg();
        self.specials.insert(name.to_string(), s);
        self.special_list.push((s, sp));
        Ok(s)
    }

    /// A source operand as a register slot (immediates and addresses as constants).
    fn src(&mut self, o: &Operand, line: u32) -> Result<u32, LoadError> {
        match o {
            Operand::Reg(n) => match self.lookup(n) {
                Some(Var::Reg { slot, .. }) => Ok(slot),
                Some(Var::Pred(_)) => Err(inv(line, format!("{n} is a predicate where a value is expected"))),
                Some(Var::Addr(a)) => Ok(self.konst(a)),
                None if n.starts_with("%tid")
                    || n.starts_with("%ntid")
                    || n.starts_with("%ctaid")
                    || n.starts_with("%nctaid")
                    || n.starts_with("%laneid")
                    || n.starts_with("%warpid")
                    || n.starts_with("%nwarpid")
                    || n.starts_with("%smid")
                    || n.starts_with("%clock")
                    || n.starts_with("%globaltimer")
                    || n.starts_with("%lanemask") =>
                {
                    self.special(n, line)
                }
                None => Err(inv(line, format!("register {n} is not declared"))),
            },
            Operand::Int(v) => Ok(self.konst(*v as u64)),
            Operand::F32(b) => Ok(self.konst(*b as u64)),
            Operand::F64(b) => Ok(self.konst(*b)),
            Operand::Sym(n) => match self.lookup(n) {
                Some(Var::Addr(a)) => Ok(self.konst(a)),
                _ => Err(inv(line, format!("unknown symbol {n}"))),
            },
            _ => Err(inv(line, format!("unexpected operand {o:?}"))),
        }
    }

    fn reg_bits(&self, o: &Operand) -> Option<u32> {
        match o {
            Operand::Reg(n) => match self.lookup(n) {
                Some(Var::Reg { bits, .. }) => Some(bits),
                _ => None,
            },
            _ => None,
        }
    }

    fn dst(&mut self, o: &Operand, line: u32) -> Result<u32, LoadError> {
        match o {
            Operand::Sink => Ok(self.sink),
            Operand::Reg(n) => match self.lookup(n) {
                Some(Var::Reg { slot, .. }) => Ok(slot),
                Some(Var::Pred(_)) => {
                    Err(inv(line, format!("{n} is a predicate where a value register is expected")))
                }
                _ => Err(inv(line, format!("register {n} is not declared"))),
            },
            _ => Err(inv(line, format!("destination {o:?} is not a register"))),
        }
    }

    fn pred_of(&mut self, o: &Operand, line: u32) -> Result<u32, LoadError> {
        match o {
            Operand::Sink => Ok(self.sink_pred),
            Operand::Reg(n) => match self.lookup(n) {
                Some(Var::Pred(p)) => Ok(p),
                _ => Err(inv(line, format!("{n} is not a predicate register"))),
            },
            _ => Err(inv(line, format!("expected a predicate, found {o:?}"))),
        }
    }

    /// `[base+off]` as (slot holding the base, offset).
    fn address(&mut self, o: &Operand, line: u32) -> Result<(u32, i64), LoadError> {
        let Operand::Addr(base, off) = o else {
            return Err(inv(line, format!("expected an address, found {o:?}")));
        };
        match base.as_ref() {
            Operand::Reg(_) => match self.src(base, line) {
                Ok(s) => Ok((s, *off)),
                Err(e) => Err(e),
            },
            Operand::Sym(n) => match self.lookup(n) {
                Some(Var::Addr(a)) => Ok((self.konst(0), (a as i64).wrapping_add(*off))),
                Some(Var::Reg { slot, .. }) => Ok((slot, *off)),
                _ => Err(inv(line, format!("unknown symbol {n} in an address"))),
            },
            Operand::Int(v) => Ok((self.konst(0), v.wrapping_add(*off))),
            _ => Err(inv(line, format!("unsupported address {o:?}"))),
        }
    }

    fn vec_dsts(&mut self, o: &Operand, line: u32) -> Result<Vec<u32>, LoadError> {
        match o {
            Operand::Vector(v) => v.iter().map(|x| self.dst(x, line)).collect(),
            x => Ok(vec![self.dst(x, line)?]),
        }
    }

    fn vec_srcs(&mut self, o: &Operand, line: u32) -> Result<Vec<u32>, LoadError> {
        match o {
            Operand::Vector(v) => v.iter().map(|x| self.src(x, line)).collect(),
            x => Ok(vec![self.src(x, line)?]),
        }
    }

    fn instruction(&mut self, i: &ptx::Instruction) -> Result<Inst, LoadError> {
        let line = i.line;
        let mut inst = self.blank(line, i.loc);
        if let Some((p, neg)) = &i.guard {
            let slot = self.pred_of(&Operand::Reg(p.clone()), line)?;
            inst.guard = Some((slot, *neg));
        }
        let opcode = i.op.join(".");
        let mut mods = Mods::new(&i.op[1..], line, &opcode);
        let ops = &i.operands;
        let want = |n: usize| -> Result<(), LoadError> {
            if ops.len() != n {
                Err(inv(line, format!("{} takes {n} operands, found {}", i.op.join("."), ops.len())))
            } else {
                Ok(())
            }
        };
        let base = i.op[0].as_str();
        match base {
            "add" | "sub" | "mul" | "mad" | "fma" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor"
            | "shl" | "shr" | "copysign" | "addc" | "subc" | "madc" => {
                self.arith(&mut inst, base, &mut mods, ops, line)?
            }
            "not" | "neg" | "abs" | "popc" | "clz" | "brev" | "bfind" | "cnot" | "rcp" | "sqrt" | "rsqrt"
            | "ex2" | "lg2" | "sin" | "cos" | "tanh" => {
                want(2)?;
                self.unary(&mut inst, base, &mut mods, ops, line)?
            }
            "bfi" | "bfe" => {
                let ty = mods.ty()?;
                let exec = alu::bitfield(base, ty.bits(), ty.signed()).ok_or_else(|| mods.bad())?;
                want(if base == "bfi" { 5 } else { 4 })?;
                inst.d[0] = self.dst(&ops[0], line)?;
                for k in 1..ops.len() {
                    inst.s[k - 1] = self.src(&ops[k], line)?;
                }
                inst.exec = exec;
            }
            "mov" => self.mov(&mut inst, &mut mods, ops, line)?,
            "setp" => self.setp(&mut inst, &mut mods, ops, line)?,
            "selp" => {
                want(4)?;
                let ty = mods.ty()?;
                inst.exec = alu::selp_op(ty.bits()).ok_or_else(|| mods.bad())?;
                inst.d[0] = self.dst(&ops[0], line)?;
                inst.s[0] = self.src(&ops[1], line)?;
                inst.s[1] = self.src(&ops[2], line)?;
                inst.p[0] = self.pred_of(&ops[3], line)?;
            }
            "cvt" => self.cvt(&mut inst, &mut mods, ops, line)?,
            "cvta" => {
                want(2)?;
                mods.take("to");
                if !mods.take("global") {
                    return Err(unsup(
                        line,
                        format!("{} (only the global window is modelled)", i.op.join(".")),
                    ));
                }
                let ty = mods.ty()?;
                if ty.bits() != 64 {
                    return Err(mods.bad());
                }
                inst.exec = memops::cvta_global();
                inst.d[0] = self.dst(&ops[0], line)?;
                inst.s[0] = self.src(&ops[1], line)?;
            }
            "ld" | "st" => self.ldst(&mut inst, base == "ld", &mut mods, ops, line)?,
            "atom" => self.atom(&mut inst, &mut mods, ops, line)?,
            "cp" => self.cp(&mut inst, &mut mods, ops, line)?,
            "shfl" => {
                want(5)?;
                if !mods.take("sync") {
                    return Err(unsup(line, "shfl without .sync (pre-Volta form)"));
                }
                let mode = mods.one_of(&["up", "down", "bfly", "idx"])?;
                if mods.ty()? != Ty::B32 {
                    return Err(mods.bad());
                }
                inst.exec = warpops::shfl_op(mode).expect("mode");
                match &ops[0] {
                    Operand::Pair(d, p) => {
                        inst.d[0] = self.dst(d, line)?;
                        inst.p[0] = self.pred_of(p, line)?;
                    }
                    d => inst.d[0] = self.dst(d, line)?,
                }
                for k in 0..4 {
                    inst.s[k] = self.src(&ops[k + 1], line)?;
                }
                inst.ctrl = Ctrl::Sync(Need::Member(inst.s[3]));
                inst.class = Class::Sync;
            }
            "vote" => {
                want(3)?;
                if !mods.take("sync") {
                    return Err(unsup(line, "vote without .sync (pre-Volta form)"));
                }
                let mode = mods.one_of(&["ballot", "any", "all", "uni"])?;
                let ty = mods.ty()?;
                inst.exec = warpops::vote_op(mode).expect("mode");
                if mode == "ballot" {
                    if ty != Ty::B32 {
                        return Err(mods.bad());
                    }
                    inst.d[0] = self.dst(&ops[0], line)?;
                } else {
                    if ty != Ty::Pred {
                        return Err(mods.bad());
                    }
                    inst.p[1] = self.pred_of(&ops[0], line)?;
                }
                let (p, neg) = match &ops[1] {
                    Operand::Not(p) => (p.as_ref(), true),
                    p => (p, false),
                };
                inst.p[0] = self.pred_of(p, line)?;
                inst.aux = neg as u32;
                inst.s[0] = self.src(&ops[2], line)?;
                inst.ctrl = Ctrl::Sync(Need::Member(inst.s[0]));
                inst.class = Class::Sync;
            }
            "bar" | "barrier" => {
                mods.take("cta");
                if mods.take("warp") {
                    mods.expect("sync")?;
                    want(1)?;
                    inst.s[0] = self.src(&ops[0], line)?;
                    inst.exec = warpops::warp_sync_op();
                    inst.ctrl = Ctrl::Sync(Need::Member(inst.s[0]));
                } else {
                    if !mods.take("sync") {
                        return Err(unsup(
                            line,
                            format!("{} (only bar.sync / barrier.sync)", i.op.join(".")),
                        ));
                    }
                    // bar.sync is barrier.sync.aligned (PTX ISA); aux marks the aligned form.
                    let aligned = mods.take("aligned") || base == "bar";
                    inst.aux = aligned as u32;
                    if ops.len() != 1 {
                        return Err(unsup(line, "a barrier with a thread count"));
                    }
                    match &ops[0] {
                        Operand::Int(0) => {}
                        _ => return Err(unsup(line, "a barrier other than barrier 0")),
                    }
                    inst.ctrl = Ctrl::Bar;
                }
                inst.class = Class::Sync;
            }
            "ldmatrix" => {
                want(2)?;
                mods.expect("sync")?;
                mods.expect("aligned")?;
                mods.expect("m8n8")?;
                let n = match mods.one_of(&["x1", "x2", "x4"])? {
                    "x1" => 1,
                    "x2" => 2,
                    _ => 4,
                };
                let trans = mods.take("trans");
                if !(mods.take("shared") || mods.take("shared::cta")) {
                    return Err(mods.bad());
                }
                if mods.ty()? != Ty::B16 {
                    return Err(mods.bad());
                }
                let d = self.vec_dsts(&ops[0], line)?;
                if d.len() != n {
                    return Err(inv(line, format!("ldmatrix .x{n} needs {n} destinations")));
                }
                inst.d[..n].copy_from_slice(&d);
                let (s, off) = self.address(&ops[1], line)?;
                inst.s[0] = s;
                inst.imm = off;
                inst.exec = warpops::ldmatrix_op(n, trans).expect("n");
                inst.ctrl = Ctrl::Sync(Need::All);
                inst.class = Class::Mem;
            }
            "mma" => {
                want(4)?;
                for m in ["sync", "aligned", "m16n8k16", "row", "col", "f32", "bf16", "bf16", "f32"] {
                    mods.expect(m)?;
                }
                let d = self.vec_dsts(&ops[0], line)?;
                let a = self.vec_srcs(&ops[1], line)?;
                let b = self.vec_srcs(&ops[2], line)?;
                let c = self.vec_srcs(&ops[3], line)?;
                if d.len() != 4 || a.len() != 4 || b.len() != 2 || c.len() != 4 {
                    return Err(inv(line, "mma.m16n8k16 bf16 takes 4 d, 4 a, 2 b and 4 c registers"));
                }
                inst.d.copy_from_slice(&d);
                inst.s[..4].copy_from_slice(&a);
                inst.s[4..6].copy_from_slice(&b);
                inst.s[6..10].copy_from_slice(&c);
                inst.exec = warpops::mma_op();
                inst.ctrl = Ctrl::Sync(Need::All);
                inst.class = Class::Mma;
            }
            "bra" => {
                mods.take("uni");
                want(1)?;
                let Operand::Sym(l) = &ops[0] else { return Err(inv(line, "bra needs a label")) };
                let t = *self.labels.get(l).ok_or_else(|| inv(line, format!("unknown label {l}")))?;
                inst.ctrl = Ctrl::Bra(t);
                inst.class = Class::Control;
            }
            "ret" => {
                mods.take("uni");
                inst.ctrl = Ctrl::Ret;
                inst.class = Class::Control;
            }
            "exit" => {
                inst.ctrl = Ctrl::Exit;
                inst.class = Class::Control;
            }
            "call" => self.call(&mut inst, &mut mods, ops, line)?,
            // membar.level is fence.sc at the matching scope (PTX ISA, membar/fence,
            // sm_70 and later); fence without .sem is fence.acq_rel. The proxy and
            // sync_restrict forms are not implemented.
            "membar" | "fence" => {
                want(0)?;
                if base == "membar" {
                    mods.one_of(&["cta", "gl", "sys"])?;
                } else {
                    for sem in ["sc", "acq_rel"] {
                        if mods.take(sem) {
                            break;
                        }
                    }
                    mods.one_of(&["cta", "cluster", "gpu", "sys"])?;
                }
                inst.exec = memops::fence_op();
                inst.class = Class::Sync;
            }
            _ => return Err(unsup(line, format!("instruction {}", i.op.join(".")))),
        }
        mods.done()?;
        Ok(inst)
    }

    fn arith(
        &mut self,
        inst: &mut Inst,
        base: &str,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        let ty = mods.ty()?;
        // Predicate logic.
        if ty == Ty::Pred {
            let exec = alu::pred_logic_op(base).ok_or_else(|| mods.bad())?;
            inst.p[0] = self.pred_of(&ops[0], line)?;
            inst.s[0] = self.pred_of(&ops[1], line)?;
            inst.s[1] = self.pred_of(ops.get(2).ok_or_else(|| inv(line, "missing operand"))?, line)?;
            inst.exec = exec;
            return Ok(());
        }
        let n_src = match base {
            "mad" | "fma" | "madc" => 3,
            _ => 2,
        };
        if ops.len() != n_src + 1 {
            return Err(inv(line, format!("{base} takes {} operands, found {}", n_src + 1, ops.len())));
        }
        inst.d[0] = self.dst(&ops[0], line)?;
        for k in 0..n_src {
            inst.s[k] = self.src(&ops[k + 1], line)?;
        }
        if ty.float() {
            inst.class = if ty == Ty::F64 { Class::F64 } else { Class::F32 };
            let rnd = mods.rounding();
            let approx = mods.take("approx");
            let full = mods.take("full");
            let ftz = mods.take("ftz");
            let sat = mods.take("sat");
            let exec = match (ty, base) {
                // .approx / .full belong to div.f32 only; min, max and copysign
                // take no rounding modifier.
                _ if (approx || full) && !(ty == Ty::F32 && base == "div") => None,
                _ if rnd.is_some() && matches!(base, "min" | "max" | "copysign") => None,
                (Ty::F32, "fma" | "mad") => {
                    if rnd.is_none() {
                        return Err(inv(line, format!("{base}.f32 needs a rounding modifier")));
                    }
                    Some(fp::f32_fma(rnd.unwrap_or(fp::RN), ftz, sat))
                }
                // fma/mad/div.f64 have no default rounding (PTX ISA fma, mad, div).
                (Ty::F64, "fma" | "mad" | "div") if rnd.is_none() => {
                    return Err(inv(line, format!("{base}.f64 needs a rounding modifier")))
                }
                (Ty::F64, "fma" | "mad") if !ftz && !sat => fp::f64_fma(rnd.unwrap_or(fp::RN)),
                (Ty::F32, "div") if approx => fp::f32_binary("div.approx", fp::RN, ftz, sat),
                (Ty::F32, "div") if full => fp::f32_binary("div.full", fp::RN, ftz, sat),
                (Ty::F32, "div") if rnd.is_none() => {
                    return Err(inv(line, "div.f32 needs .approx, .full or a rounding modifier"))
                }
                (Ty::F32, _) => fp::f32_binary(base, rnd.unwrap_or(fp::RN), ftz, sat),
                (Ty::F64, _) if !ftz && !sat && !approx => fp::f64_binary(base, rnd.unwrap_or(fp::RN)),
                _ => None,
            };
            inst.exec = exec.ok_or_else(|| mods.bad())?;
            return Ok(());
        }
        // Integers.
        let (w, s) = (ty.bits(), ty.signed());
        let cc = mods.take("cc");
        let exec = match base {
            "addc" | "subc" | "madc" => {
                let part = if base == "madc" { Some(mods.one_of(&["lo", "hi"])?) } else { None };
                let op = match (base, part) {
                    ("addc", _) => "add",
                    ("subc", _) => "sub",
                    (_, Some("lo")) => "mad.lo",
                    _ => "mad.hi",
                };
                inst.aux = self.cc;
                alu::carry_op(op, w, true, cc, s)
            }
            "add" | "sub" if cc => {
                inst.aux = self.cc;
                alu::carry_op(base, w, false, true, s)
            }
            "mad" if cc => {
                let part = mods.one_of(&["lo", "hi"])?;
                inst.aux = self.cc;
                alu::carry_op(if part == "lo" { "mad.lo" } else { "mad.hi" }, w, false, true, s)
            }
            "mad" => {
                let part = mods.one_of(&["lo", "hi", "wide"])?;
                alu::mad_op(part, w, s)
            }
            "mul" => {
                let part = mods.one_of(&["lo", "hi", "wide"])?;
                alu::binary(&format!("mul.{part}"), false, w, s)
            }
            "add" | "sub" => {
                let sat = mods.take("sat");
                alu::binary(base, sat, w, s)
            }
            "shr" | "min" | "max" | "div" | "rem" => alu::binary(base, false, w, s),
            "shl" | "and" | "or" | "xor" => alu::binary(base, false, w, false),
            _ => None,
        };
        inst.exec = exec.ok_or_else(|| mods.bad())?;
        Ok(())
    }

    fn unary(
        &mut self,
        inst: &mut Inst,
        base: &str,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        let ty = mods.ty()?;
        if ty == Ty::Pred {
            if base != "not" {
                return Err(mods.bad());
            }
            inst.p[0] = self.pred_of(&ops[0], line)?;
            inst.s[0] = self.pred_of(&ops[1], line)?;
            inst.exec = alu::pred_logic_op("not").expect("not");
            return Ok(());
        }
        inst.d[0] = self.dst(&ops[0], line)?;
        inst.s[0] = self.src(&ops[1], line)?;
        if ty.float() {
            inst.class = if ty == Ty::F64 { Class::F64 } else { Class::F32 };
            let rnd = mods.rounding();
            let approx = mods.take("approx");
            let ftz = mods.take("ftz");
            let name = if approx { format!("{base}.approx") } else { base.to_string() };
            if !approx && rnd.is_none() && matches!(base, "rcp" | "sqrt") {
                return Err(inv(line, format!("{base} needs .approx or a rounding modifier")));
            }
            let exec = match ty {
                Ty::F32 => fp::f32_unary(&name, rnd.unwrap_or(fp::RN), ftz),
                Ty::F64 => fp::f64_unary(&name, rnd.unwrap_or(fp::RN), ftz),
                _ => None,
            };
            inst.exec = exec.ok_or_else(|| mods.bad())?;
            return Ok(());
        }
        let name = if base == "bfind" && mods.take("shiftamt") { "bfind.shiftamt" } else { base };
        inst.exec = alu::unary(name, ty.bits(), ty.signed()).ok_or_else(|| mods.bad())?;
        Ok(())
    }

    fn mov(
        &mut self,
        inst: &mut Inst,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        let ty = mods.ty()?;
        if ops.len() != 2 {
            return Err(inv(line, "mov takes 2 operands"));
        }
        if ty == Ty::Pred {
            inst.p[0] = self.pred_of(&ops[0], line)?;
            match &ops[1] {
                Operand::Int(v) => inst.imm = *v,
                o => inst.s[0] = self.pred_of(o, line)?,
            }
            inst.exec = alu::mov_pred_op();
            return Ok(());
        }
        let w = ty.bits();
        match (&ops[0], &ops[1]) {
            (d, Operand::Vector(v)) => {
                let ew = w / v.len() as u32;
                if v.len() > 4 || ew * v.len() as u32 != w {
                    return Err(inv(line, format!("mov.b{w} cannot pack {} elements", v.len())));
                }
                for (k, x) in v.iter().enumerate() {
                    inst.s[k] = self.src(x, line)?;
                }
                inst.d[0] = self.dst(d, line)?;
                inst.imm = v.len() as i64;
                inst.aux = ew;
                inst.exec = alu::pack_op();
            }
            (Operand::Vector(v), s) => {
                let ew = w / v.len() as u32;
                if v.len() > 4 || ew * v.len() as u32 != w {
                    return Err(inv(line, format!("mov.b{w} cannot unpack into {} elements", v.len())));
                }
                for (k, x) in v.iter().enumerate() {
                    inst.d[k] = self.dst(x, line)?;
                }
                inst.s[0] = self.src(s, line)?;
                inst.imm = v.len() as i64;
                inst.aux = ew;
                inst.exec = alu::unpack_op();
            }
            (d, s) => {
                inst.d[0] = self.dst(d, line)?;
                inst.s[0] = self.src(s, line)?;
                inst.exec = alu::mov_op(w).ok_or_else(|| mods.bad())?;
            }
        }
        Ok(())
    }

    fn setp(
        &mut self,
        inst: &mut Inst,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        let cmp_s = mods.next_mod().ok_or_else(|| inv(line, "setp without a comparison"))?;
        let bop = if mods.take("and") {
            alu::B_AND
        } else if mods.take("or") {
            alu::B_OR
        } else if mods.take("xor") {
            alu::B_XOR
        } else {
            alu::B_NONE
        };
        let ftz = mods.take("ftz");
        let ty = mods.ty()?;
        let (cmp, unsigned) = alu::cmp_code(cmp_s, ty.signed())
            .filter(|(_, u)| !(ty.float() && u.is_some()))
            .ok_or_else(|| unsup(line, format!("comparison .{cmp_s} on {ty:?}")))?;
        let want = if bop == alu::B_NONE { 3 } else { 4 };
        if ops.len() != want {
            return Err(inv(line, format!("setp takes {want} operands")));
        }
        match &ops[0] {
            Operand::Pair(p, q) => {
                inst.p[0] = self.pred_of(p, line)?;
                inst.p[1] = self.pred_of(q, line)?;
            }
            p => inst.p[0] = self.pred_of(p, line)?,
        }
        inst.s[0] = self.src(&ops[1], line)?;
        inst.s[1] = self.src(&ops[2], line)?;
        if bop != alu::B_NONE {
            match &ops[3] {
                Operand::Not(_) => return Err(unsup(line, "setp with a negated combining predicate")),
                c => inst.s[2] = self.pred_of(c, line)?,
            }
        }
        inst.exec = if ty.float() {
            fp::setp_float(cmp, ty == Ty::F64, ftz, bop)
        } else {
            if ftz || cmp > alu::GE {
                return Err(mods.bad());
            }
            let signed = ty.signed() && unsigned.is_none();
            alu::setp_int_op(cmp, ty.bits(), signed, bop)
        }
        .ok_or_else(|| mods.bad())?;
        Ok(())
    }

    fn cvt(
        &mut self,
        inst: &mut Inst,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        let irnd = ["rni", "rzi", "rmi", "rpi"].iter().find(|m| mods.has(m)).copied();
        let frnd = ["rn", "rz", "rm", "rp"].iter().find(|m| mods.has(m)).copied();
        if let Some(m) = irnd.or(frnd) {
            mods.take(m);
        }
        let ftz = mods.take("ftz");
        let sat = mods.take("sat");
        let (dt, st) = mods.two_types()?;
        if dt == Ty::Bf16x2 || dt == Ty::F16x2 {
            if st != Ty::F32 || ops.len() != 3 {
                return Err(mods.bad());
            }
            inst.d[0] = self.dst(&ops[0], line)?;
            inst.s[0] = self.src(&ops[1], line)?;
            inst.s[1] = self.src(&ops[2], line)?;
            let rnd = frnd
                .and_then(fp::rounding)
                .ok_or_else(|| inv(line, "cvt to a packed half type needs .rn or .rz"))?;
            inst.exec = fp::cvt_x2_op(dt == Ty::Bf16x2, rnd).ok_or_else(|| mods.bad())?;
            return Ok(());
        }
        if ops.len() != 2 {
            return Err(inv(line, "cvt takes 2 operands"));
        }
        inst.d[0] = self.dst(&ops[0], line)?;
        inst.s[0] = self.src(&ops[1], line)?;
        let kind = |t: Ty| match t {
            Ty::F16 => fp::K_F16,
            Ty::Bf16 => fp::K_BF16,
            Ty::F32 => fp::K_F32,
            Ty::F64 => fp::K_F64,
            t if t.signed() => fp::K_S,
            _ => fp::K_U,
        };
        if dt.int() && st.int() {
            if irnd.is_some() || frnd.is_some() || ftz {
                return Err(mods.bad());
            }
            inst.exec = alu::cvt_int_op(dt.bits(), dt.signed(), st.bits(), st.signed(), sat)
                .ok_or_else(|| mods.bad())?;
            return Ok(());
        }
        // Rounding rules (PTX ISA cvt): "Floating-point rounding is required for
        // float-to-float conversions that result in loss of precision, and for
        // integer-to-float conversions. Floating-point rounding is illegal in all
        // other instances." Integer rounding is "required for float-to-integer
        // conversions, and for same-size float-to-float conversions where the value
        // is rounded to an integer. Integer rounding is illegal in all other
        // instances."
        let exact = dt == st || dt == Ty::F64 || (dt == Ty::F32 && st.bits() <= 16);
        let lossy_float = dt.float() && st.float() && !exact;
        let needs_frnd = lossy_float || (dt.float() && st.int());
        let (rnd, integral) = match (irnd, frnd) {
            (Some(r), None) if st.float() && (dt.int() || dt.bits() == st.bits()) => {
                (fp::rounding(r).expect("irnd"), true)
            }
            (None, Some(r)) if needs_frnd => (fp::rounding(r).expect("frnd"), false),
            (None, None) if dt.int() => {
                return Err(inv(line, "float-to-integer cvt needs .rni, .rzi, .rmi or .rpi"))
            }
            (None, None) if needs_frnd => return Err(inv(line, "this cvt needs a rounding modifier")),
            (None, None) => (fp::RN, false),
            _ => return Err(inv(line, "this cvt does not take this rounding modifier")),
        };
        if ftz && dt != Ty::F32 && st != Ty::F32 {
            // ".ftz can only be specified when either .dtype or .atype is .f32".
            return Err(mods.bad());
        }
        inst.class = if dt == Ty::F64 || st == Ty::F64 { Class::F64 } else { Class::F32 };
        inst.exec =
            fp::cvt_float(kind(dt), dt.bits(), kind(st), st.bits(), rnd, integral && dt.float(), ftz, sat)
                .ok_or_else(|| mods.bad())?;
        Ok(())
    }

    fn ldst(
        &mut self,
        inst: &mut Inst,
        load: bool,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        for hint in [
            "weak",
            "ca",
            "cg",
            "cs",
            "lu",
            "cv",
            "wb",
            "wt",
            "L1::no_allocate",
            "L1::evict_last",
            "L1::evict_first",
            "L1::evict_normal",
            "L1::evict_unchanged",
            "L2::64B",
            "L2::128B",
            "L2::256B",
            "L2::evict_last",
            "L2::evict_first",
            "L2::evict_normal",
        ] {
            // Cache hints and eviction priorities change timing, not values.
            mods.take(hint);
        }
        let space = if mods.take("global") {
            GLOBAL
        } else if mods.take("shared") || mods.take("shared::cta") {
            SHARED
        } else if mods.take("local") {
            LOCAL
        } else if mods.take("param") || mods.take("param::func") || mods.take("param::entry") {
            PARAM
        } else {
            return Err(unsup(
                line,
                format!(
                    "{} without a state space (generic addressing is not modelled)",
                    if load { "ld" } else { "st" }
                ),
            ));
        };
        if load {
            // .nc: read through the non-coherent cache, same values.
            mods.take("nc");
        }
        let n = if mods.take("v2") {
            2
        } else if mods.take("v4") {
            4
        } else {
            1
        };
        let ty = mods.ty()?;
        if ty == Ty::Pred {
            return Err(mods.bad());
        }
        let size = (ty.bits() / 8) as usize;
        inst.class = Class::Mem;
        if ops.len() != 2 {
            return Err(inv(line, "ld/st take 2 operands"));
        }
        if load {
            let d = self.vec_dsts(&ops[0], line)?;
            if d.len() != n {
                return Err(inv(line, format!("a .v{n} load needs {n} destinations")));
            }
            inst.d[..n].copy_from_slice(&d);
            let (s, off) = self.address(&ops[1], line)?;
            inst.s[0] = s;
            inst.imm = off;
            // A sub-word signed load sign-extends into its register.
            let sign = ty.signed()
                && self
                    .reg_bits(match &ops[0] {
                        Operand::Vector(v) => &v[0],
                        o => o,
                    })
                    .is_some_and(|b| b > ty.bits());
            inst.exec = memops::load(space, size, n, sign).ok_or_else(|| mods.bad())?;
        } else {
            let (s, off) = self.address(&ops[0], line)?;
            let v = self.vec_srcs(&ops[1], line)?;
            if v.len() != n {
                return Err(inv(line, format!("a .v{n} store needs {n} values")));
            }
            inst.s[0] = s;
            inst.imm = off;
            inst.s[1..1 + n].copy_from_slice(&v);
            inst.exec = memops::store(space, size, n).ok_or_else(|| mods.bad())?;
        }
        Ok(())
    }

    fn atom(
        &mut self,
        inst: &mut Inst,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        mods.take("relaxed");
        mods.take("gpu");
        mods.take("cta");
        let space = if mods.take("global") {
            GLOBAL
        } else if mods.take("shared") || mods.take("shared::cta") {
            SHARED
        } else {
            return Err(unsup(line, "atom without .global or .shared"));
        };
        let op = mods.one_of(&["add", "min", "max", "exch", "cas", "and", "or", "xor", "inc", "dec"])?;
        let ty = mods.ty()?;
        let kind = if ty.float() {
            2
        } else if ty.signed() {
            1
        } else {
            0
        };
        let want = if op == "cas" { 4 } else { 3 };
        if ops.len() != want {
            return Err(inv(line, format!("atom.{op} takes {want} operands")));
        }
        inst.d[0] = self.dst(&ops[0], line)?;
        let (s, off) = self.address(&ops[1], line)?;
        inst.s[0] = s;
        inst.imm = off;
        // cas: [a], compare, new -> s[2] compare, s[1] new.
        if op == "cas" {
            inst.s[2] = self.src(&ops[2], line)?;
            inst.s[1] = self.src(&ops[3], line)?;
        } else {
            inst.s[1] = self.src(&ops[2], line)?;
        }
        inst.class = Class::Mem;
        inst.exec = memops::atomic(space, op, ty.bits(), kind).ok_or_else(|| mods.bad())?;
        Ok(())
    }

    fn cp(
        &mut self,
        inst: &mut Inst,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        mods.expect("async")?;
        inst.class = Class::Mem;
        if mods.take("commit_group") {
            inst.exec = memops::cp_commit_op();
            return Ok(());
        }
        if mods.take("wait_group") {
            let Some(Operand::Int(n)) = ops.first() else {
                return Err(inv(line, "cp.async.wait_group needs a count"));
            };
            inst.imm = *n;
            inst.exec = memops::cp_wait_op();
            return Ok(());
        }
        if mods.take("wait_all") {
            inst.aux = 1;
            inst.exec = memops::cp_wait_op();
            return Ok(());
        }
        let cg = mods.take("cg");
        if !cg && !mods.take("ca") {
            return Err(mods.bad());
        }
        if !(mods.take("shared") || mods.take("shared::cta")) || !mods.take("global") {
            return Err(mods.bad());
        }
        for hint in ["L2::64B", "L2::128B", "L2::256B"] {
            mods.take(hint);
        }
        if ops.len() < 3 || ops.len() > 4 {
            return Err(inv(line, "cp.async takes [dst], [src], cp-size{, src-size}"));
        }
        let (d, doff) = self.address(&ops[0], line)?;
        let (s, soff) = self.address(&ops[1], line)?;
        if soff != 0 {
            // Fold the source offset into a register-free form is not needed by
            // nvcc's output; keep the decoder honest.
            return Err(unsup(line, "cp.async with an offset in the source address"));
        }
        let Operand::Int(size) = ops[2] else {
            return Err(inv(line, "cp.async cp-size must be an immediate"));
        };
        if !matches!(size, 4 | 8 | 16) || (cg && size != 16) {
            return Err(inv(line, format!("cp.async cp-size {size} is not allowed here")));
        }
        inst.s[0] = d;
        inst.imm = doff;
        inst.s[1] = s;
        inst.s[2] = match ops.get(3) {
            Some(o) => self.src(o, line)?,
            None => NONE,
        };
        inst.aux = size as u32;
        inst.exec = memops::cp_async_op();
        Ok(())
    }

    fn call(
        &mut self,
        inst: &mut Inst,
        mods: &mut Mods<'_>,
        ops: &[Operand],
        line: u32,
    ) -> Result<(), LoadError> {
        mods.take("uni");
        // call (rets), func, (args) | call func, (args) | call func
        let mut rets = Vec::new();
        let mut args = Vec::new();
        let mut func = None;
        for o in ops {
            match o {
                Operand::List(l) if func.is_none() => rets = l.clone(),
                Operand::List(l) => args = l.clone(),
                Operand::Sym(s) if func.is_none() => func = Some(s.clone()),
                _ => return Err(inv(line, format!("unexpected call operand {o:?}"))),
            }
        }
        let func = func.ok_or_else(|| inv(line, "call without a function"))?;
        let addr_of = |b: &Self, o: &Operand| -> Result<u64, LoadError> {
            match o {
                Operand::Sym(n) => match b.lookup(n) {
                    Some(Var::Addr(a)) if a >= CPARAM_BASE => Ok(a),
                    _ => Err(inv(line, format!("call argument {n} is not a .param variable"))),
                },
                _ => Err(unsup(line, "call arguments other than .param variables")),
            }
        };
        let args: Vec<u64> = args.iter().map(|o| addr_of(self, o)).collect::<Result<_, _>>()?;
        let rets: Vec<u64> = rets.iter().map(|o| addr_of(self, o)).collect::<Result<_, _>>()?;
        let cs = self.calls.len();
        self.calls.push(CallSite::default());
        self.pending.push((cs, func, args, rets, line));
        inst.ctrl = Ctrl::Call(cs as u32);
        inst.class = Class::Control;
        Ok(())
    }
}

fn noop(_: &mut crate::exec::Core<'_>, _: &Inst, _: u32) -> Result<(), crate::error::Fault> {
    Ok(())
}

fn render(i: &ptx::Instruction) -> String {
    fn op(o: &Operand) -> String {
        match o {
            Operand::Reg(r) | Operand::Sym(r) => r.clone(),
            Operand::Int(v) => v.to_string(),
            Operand::F32(b) => format!("0f{b:08X}"),
            Operand::F64(b) => format!("0d{b:016X}"),
            Operand::Addr(b, 0) => format!("[{}]", op(b)),
            Operand::Addr(b, off) => format!("[{}+{off}]", op(b)),
            Operand::Vector(v) => format!("{{{}}}", v.iter().map(op).collect::<Vec<_>>().join(", ")),
            Operand::List(v) => format!("({})", v.iter().map(op).collect::<Vec<_>>().join(", ")),
            Operand::Pair(a, b) => format!("{}|{}", op(a), op(b)),
            Operand::Not(a) => format!("!{}", op(a)),
            Operand::Sink => "_".into(),
        }
    }
    let g = match &i.guard {
        Some((p, true)) => format!("@!{p} "),
        Some((p, false)) => format!("@{p} "),
        None => String::new(),
    };
    let ops: Vec<String> = i.operands.iter().map(op).collect();
    format!("{g}{} {}", i.op.join("."), ops.join(", ")).trim_end().to_string()
}

/// An opcode's modifiers, consumed as the decoder recognises them; whatever is
/// left at the end is reported as not implemented.
struct Mods<'a> {
    list: Vec<&'a str>,
    line: u32,
    opcode: &'a str,
}

impl<'a> Mods<'a> {
    fn new(list: &'a [String], line: u32, opcode: &'a str) -> Self {
        Mods { list: list.iter().map(String::as_str).collect(), line, opcode }
    }
    fn has(&self, m: &str) -> bool {
        self.list.contains(&m)
    }
    fn take(&mut self, m: &str) -> bool {
        match self.list.iter().position(|x| *x == m) {
            Some(p) => {
                self.list.remove(p);
                true
            }
            None => false,
        }
    }
    fn expect(&mut self, m: &str) -> Result<(), LoadError> {
        if self.list.first() == Some(&m) {
            self.list.remove(0);
            Ok(())
        } else {
            Err(self.bad())
        }
    }
    fn one_of(&mut self, opts: &[&'static str]) -> Result<&'static str, LoadError> {
        for &o in opts {
            if self.take(o) {
                return Ok(o);
            }
        }
        Err(self.bad())
    }
    fn next_mod(&mut self) -> Option<&'a str> {
        (!self.list.is_empty()).then(|| self.list.remove(0))
    }
    fn rounding(&mut self) -> Option<u8> {
        for m in ["rn", "rz", "rm", "rp"] {
            if self.take(m) {
                return fp::rounding(m);
            }
        }
        None
    }
    /// The instruction type: the last modifier that names one.
    fn ty(&mut self) -> Result<Ty, LoadError> {
        let p = self.list.iter().rposition(|m| Ty::parse(m).is_some()).ok_or_else(|| self.bad())?;
        Ok(Ty::parse(self.list.remove(p)).expect("checked"))
    }
    /// cvt's destination and source types, in that order.
    fn two_types(&mut self) -> Result<(Ty, Ty), LoadError> {
        let s = self.ty()?;
        let d = self.ty()?;
        Ok((d, s))
    }
    fn bad(&self) -> LoadError {
        unsup(self.line, format!("instruction {} (this combination of modifiers)", self.opcode))
    }
    fn done(&self) -> Result<(), LoadError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            let left: Vec<String> = self.list.iter().map(|m| format!(".{m}")).collect();
            Err(unsup(self.line, format!("modifier {} of {}", left.join(" "), self.opcode)))
        }
    }
}
