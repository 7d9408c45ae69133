//! The grid text form (documented in the module above): `render` writes it, `parse`
//! reads it back exactly, from anywhere in a longer context.

use std::fmt;

use super::model::{Analysis, Branch, Bus, BusKind, Case, Item, Quantity, Question};

const HEADER: [&str; 4] = ["Power grid, base ", " MVA, ", " buses, ", " branches."];
const BUSES: &str = "Buses (";
const BRANCHES: &str = "Branches (";
const QUESTION: &str = "Question: ";

/// The question sentences, as the text pieces between their numbers.
const ANGLE: [&str; 2] = ["what is the voltage angle at bus ", " in degrees?"];
const MAGNITUDE: [&str; 2] = ["what is the voltage magnitude at bus ", " in p.u.?"];
const FLOW: [&str; 4] =
    ["what is the active power flow from bus ", " to bus ", " in MW, measured at bus ", "?"];

/// A column of the bus or branch table: its header name, whether an analysis needs
/// it, and the value a left-out optional column stands for.
struct Column {
    name: &'static str,
    dc: Need,
    ac: Need,
    default: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Need {
    Required,
    /// Written only when some row differs from the default.
    Optional,
    /// Not written; read if present.
    Unused,
}

use Need::{Optional, Required, Unused};

const fn col(name: &'static str, dc: Need, ac: Need, default: f64) -> Column {
    Column { name, dc, ac, default }
}

// Indices 0 and 1 (id, type / from, to) are not numbers; the rest are read by
// `bus_value` / `branch_value` with the same index.
const BUS_COLUMNS: [Column; 8] = [
    col("id", Required, Required, 0.0),
    col("type", Required, Required, 0.0),
    col("Pd_MW", Required, Required, 0.0),
    col("Qd_MVAr", Unused, Required, 0.0),
    col("Pg_MW", Required, Required, 0.0),
    col("V_pu", Unused, Required, 1.0),
    col("Gs_MW", Optional, Optional, 0.0),
    col("Bs_MVAr", Unused, Optional, 0.0),
];

const BRANCH_COLUMNS: [Column; 6] = [
    col("from", Required, Required, 0.0),
    col("to", Required, Required, 0.0),
    col("r_pu", Unused, Optional, 0.0),
    col("x_pu", Required, Required, 0.0),
    col("b_pu", Unused, Optional, 0.0),
    col("tap", Optional, Optional, 1.0),
];
const V_COLUMN: usize = 5;

impl Column {
    fn need(&self, a: Analysis) -> Need {
        match a {
            Analysis::Dc => self.dc,
            Analysis::Ac => self.ac,
        }
    }
}

fn bus_value(b: &mut Bus, c: usize) -> &mut f64 {
    match c {
        2 => &mut b.pd,
        3 => &mut b.qd,
        4 => &mut b.pg,
        5 => &mut b.vset,
        6 => &mut b.gs,
        _ => &mut b.bs,
    }
}

fn branch_value(br: &mut Branch, c: usize) -> &mut f64 {
    match c {
        2 => &mut br.r,
        3 => &mut br.x,
        4 => &mut br.b,
        _ => &mut br.tap,
    }
}

fn bus_cell(b: &Bus, c: usize) -> String {
    match c {
        0 => b.id.to_string(),
        1 => b.kind.word().to_string(),
        V_COLUMN if b.kind == BusKind::Pq => "-".to_string(),
        _ => get(b, c, bus_value).to_string(),
    }
}

fn branch_cell(br: &Branch, c: usize) -> String {
    match c {
        0 => br.from.to_string(),
        1 => br.to.to_string(),
        _ => get(br, c, branch_value).to_string(),
    }
}

/// Column c's number in a row (rows are small plain structs; one accessor serves
/// reading and writing).
fn get<T: Clone>(row: &T, c: usize, value: fn(&mut T, usize) -> &mut f64) -> f64 {
    *value(&mut row.clone(), c)
}

/// The columns `a` writes: the required ones, and the optional ones where some row's
/// value is not the default's bits (so -0 is written and read back as -0).
fn columns<T: Clone>(
    table: &[Column],
    a: Analysis,
    rows: &[T],
    value: fn(&mut T, usize) -> &mut f64,
) -> Vec<usize> {
    (0..table.len())
        .filter(|&c| match table[c].need(a) {
            Required => true,
            Optional => rows.iter().any(|r| get(r, c, value).to_bits() != table[c].default.to_bits()),
            Unused => false,
        })
        .collect()
}

/// The prompt text of `question` about `case`: a header, the bus and branch tables
/// with the columns `question.analysis` uses, and the question sentence. Numbers are
/// in Rust's shortest round-trip form, so `parse` reads back the same bits.
pub fn render(case: &Case, question: &Question) -> String {
    let a = question.analysis;
    let mut out = format!(
        "{}{}{}{}{}{}{}\n",
        HEADER[0],
        case.base_mva,
        HEADER[1],
        case.buses.len(),
        HEADER[2],
        case.branches.len(),
        HEADER[3]
    );
    let bus_cols = columns(&BUS_COLUMNS, a, &case.buses, bus_value);
    let branch_cols = columns(&BRANCH_COLUMNS, a, &case.branches, branch_value);
    let names =
        |table: &[Column], cols: &[usize]| cols.iter().map(|&c| table[c].name).collect::<Vec<_>>().join(" ");
    out += &format!("{BUSES}{}):\n", names(&BUS_COLUMNS, &bus_cols));
    for b in &case.buses {
        out += &bus_cols.iter().map(|&c| bus_cell(b, c)).collect::<Vec<_>>().join(" ");
        out.push('\n');
    }
    out += &format!("{BRANCHES}{}):\n", names(&BRANCH_COLUMNS, &branch_cols));
    for br in &case.branches {
        out += &branch_cols.iter().map(|&c| branch_cell(br, c)).collect::<Vec<_>>().join(" ");
        out.push('\n');
    }
    out += QUESTION;
    out += question_text(question).as_str();
    out
}

/// "using a DC power flow, what is ...?"
fn question_text(q: &Question) -> String {
    let article = match q.analysis {
        Analysis::Dc => "a",
        Analysis::Ac => "an",
    };
    let sentence = match q.quantity {
        Quantity::VoltageAngle { bus } => format!("{}{bus}{}", ANGLE[0], ANGLE[1]),
        Quantity::VoltageMagnitude { bus } => format!("{}{bus}{}", MAGNITUDE[0], MAGNITUDE[1]),
        Quantity::ActivePowerFlow { from, to } => {
            format!("{}{from}{}{to}{}{from}{}", FLOW[0], FLOW[1], FLOW[2], FLOW[3])
        }
    };
    format!("using {article} {} power flow, {sentence}", q.analysis.name())
}

/// Why a text is not a grid question. `line` is 1-based in the text given to
/// `parse` (0 when there is no line to name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridTextError {
    pub line: usize,
    /// The offending line (at most 60 characters of it).
    pub found: String,
    pub msg: String,
    /// The question's analysis, when the question was read and the grid is what is
    /// wrong (so the fault is the question's, whichever expert reads it).
    pub analysis: Option<Analysis>,
}

impl fmt::Display for GridTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "grid text: {}", self.msg)
        } else {
            write!(f, "grid text, line {} ({:?}): {}", self.line, self.found, self.msg)
        }
    }
}

impl std::error::Error for GridTextError {}

/// The text between `pieces` when `s` is exactly pieces[0] x pieces[1] y ... pieces[n].
fn between<'a>(s: &'a str, pieces: &[&str]) -> Option<Vec<&'a str>> {
    let mut rest = s.strip_prefix(pieces[0])?;
    let mut out = Vec::new();
    for p in &pieces[1..] {
        let k = rest.find(p)?;
        out.push(&rest[..k]);
        rest = &rest[k + p.len()..];
    }
    rest.is_empty().then_some(out)
}

/// The lines of the grid block with their 1-based numbers in the whole text.
struct Lines<'a> {
    lines: Vec<(usize, &'a str)>,
    next: usize,
}

impl<'a> Lines<'a> {
    fn err(&self, at: usize, msg: String) -> GridTextError {
        let (line, text) = self.lines.get(at).copied().unwrap_or((self.last_line() + 1, ""));
        let found = if text.chars().count() > 60 {
            format!("{}…", text.chars().take(60).collect::<String>())
        } else {
            text.to_string()
        };
        GridTextError { line, found, msg, analysis: None }
    }
    fn last_line(&self) -> usize {
        self.lines.last().map_or(0, |l| l.0)
    }
    /// The next line's index, or an error saying what was expected instead of the end.
    fn take(&mut self, what: &str) -> Result<usize, GridTextError> {
        if self.next >= self.lines.len() {
            return Err(self.err(self.next, format!("the text ends where {what} should be")));
        }
        self.next += 1;
        Ok(self.next - 1)
    }
    /// Row k of n of a table: a line that starts with a digit (a bus number).
    fn row(&mut self, k: usize, n: usize, what: &str) -> Result<usize, GridTextError> {
        let at = self.take(&format!("row {} of the {n} {what}", k + 1))?;
        if !self.text(at).trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.err(at, format!("the header says {n} {what}, but the table has {k} rows")));
        }
        Ok(at)
    }
    fn text(&self, at: usize) -> &'a str {
        self.lines[at].1
    }
}

/// Reads the last grid block in `text` and the question that follows it. Every
/// number is read with `str::parse::<f64>`, so it is exactly the value written.
pub fn parse(text: &str) -> Result<(Case, Question), GridTextError> {
    let start = text.rfind(HEADER[0]).ok_or_else(|| GridTextError {
        line: 0,
        found: String::new(),
        msg: format!("no grid in the text (a line starting {:?})", HEADER[0]),
        analysis: None,
    })?;
    let first_line = text[..start].matches('\n').count() + 1;
    let block = &text[start..];
    let mut lines = Lines {
        lines: block
            .split('\n')
            .enumerate()
            .map(|(i, l)| (first_line + i, l.trim_end_matches('\r')))
            .collect(),
        next: 0,
    };

    let h = lines.take("the header")?;
    let fields = between(lines.text(h).trim_end(), &HEADER).ok_or_else(|| {
        lines.err(
            h,
            format!("the header must read \"{}B{}N{}M{}\"", HEADER[0], HEADER[1], HEADER[2], HEADER[3]),
        )
    })?;
    let base_mva = number(fields[0]).map_err(|m| lines.err(h, format!("base power: {m}")))?;
    let count = |s: &str, what: &str| {
        s.parse::<usize>()
            .map_err(|_| lines.err(h, format!("the number of {what} must be a whole number, not {s:?}")))
    };
    let (nb, nl) = (count(fields[1], "buses")?, count(fields[2], "branches")?);

    let bus_cols = table_header(&mut lines, BUSES, &BUS_COLUMNS)?;
    let bus_header = lines.next - 1;
    let mut buses = Vec::new(); // no capacity from the header: it is user input
    for k in 0..nb {
        let at = lines.row(k, nb, "buses")?;
        buses.push(bus_row(lines.text(at), &bus_cols).map_err(|m| lines.err(at, row_msg(m, k, nb, "bus")))?);
    }
    let branch_cols = table_header(&mut lines, BRANCHES, &BRANCH_COLUMNS)?;
    let branch_header = lines.next - 1;
    let mut branches = Vec::new();
    for k in 0..nl {
        let at = lines.row(k, nl, "branches")?;
        let br = branch_row(lines.text(at), &branch_cols)
            .map_err(|m| lines.err(at, row_msg(m, k, nl, "branch")))?;
        branches.push(br);
    }
    if lines.next < lines.lines.len()
        && lines.text(lines.next).trim_start().starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(lines.err(lines.next, format!("the header says {nl} branches, but more rows follow")));
    }

    // The question: the first "Question: " after the tables, up to its '?'.
    let end_of_tables: usize = block.split_inclusive('\n').take(lines.next).map(str::len).sum();
    let after = block.get(end_of_tables.min(block.len())..).unwrap_or("");
    let q_at = after.find(QUESTION).ok_or_else(|| {
        lines.err(lines.next, format!("no question after the grid (a sentence starting {QUESTION:?})"))
    })?;
    let q_line = lines.next + after[..q_at].matches('\n').count();
    let sentence = &after[q_at + QUESTION.len()..];
    let sentence = match sentence.find('?') {
        Some(k) => &sentence[..=k],
        None => sentence.lines().next().unwrap_or(""),
    };
    let question = parse_question(sentence).ok_or_else(|| {
        lines.err(
            q_line,
            "the question must read \"using a DC|an AC power flow, what is the voltage angle at bus N in \
             degrees?\", \"... the voltage magnitude at bus N in p.u.?\" or \"... the active power flow \
             from bus F to bus T in MW, measured at bus F?\""
                .into(),
        )
    })?;

    let a = question.analysis;
    check_case(&lines, a, base_mva, buses, branches, [bus_header, branch_header], [&bus_cols, &branch_cols])
        .and_then(|case| case.locate(&question).map(|_| case).map_err(|m| lines.err(q_line, m)))
        .map(|case| (case, question))
        .map_err(|e| GridTextError { analysis: Some(a), ..e })
}

/// The tables as a case, checked for what analysis `a` needs.
fn check_case(
    lines: &Lines,
    a: Analysis,
    base_mva: f64,
    buses: Vec<Bus>,
    branches: Vec<Branch>,
    [bus_header, branch_header]: [usize; 2],
    [bus_cols, branch_cols]: [&[usize]; 2],
) -> Result<Case, GridTextError> {
    // What the analysis needs must be in the tables.
    for (cols, table, header) in
        [(bus_cols, &BUS_COLUMNS[..], bus_header), (branch_cols, &BRANCH_COLUMNS[..], branch_header)]
    {
        if let Some(c) = (0..table.len()).find(|c| table[*c].need(a) == Required && !cols.contains(c)) {
            return Err(
                lines.err(header, format!("a {} power flow needs the column {}", a.name(), table[c].name))
            );
        }
    }

    let case = Case { name: String::new(), base_mva, buses, branches };
    case.check(a).map_err(|e| match e.item {
        Item::Case => lines.err(0, e.msg),
        Item::Bus(i) => lines.err(bus_header + 1 + i, e.msg),
        Item::Branch(i) => lines.err(branch_header + 1 + i, e.msg),
    })?;
    Ok(case)
}

fn row_msg(m: String, k: usize, n: usize, what: &str) -> String {
    format!("{what} row {} of {n}: {m}", k + 1)
}

/// Reads "Buses (id type ...):" and returns the table's column indices in order.
fn table_header(lines: &mut Lines, title: &str, table: &[Column]) -> Result<Vec<usize>, GridTextError> {
    let at = lines.take(&format!("the line {title}...):"))?;
    let text = lines.text(at).trim_end();
    let inner = text
        .strip_prefix(title)
        .and_then(|s| s.strip_suffix("):"))
        .ok_or_else(|| lines.err(at, format!("expected the table header {title}...):")))?;
    let mut cols = Vec::new();
    for name in inner.split_whitespace() {
        let c = table.iter().position(|c| c.name == name).ok_or_else(|| {
            let known: Vec<&str> = table.iter().map(|c| c.name).collect();
            lines.err(at, format!("unknown column {name:?} (known: {})", known.join(" ")))
        })?;
        if cols.contains(&c) {
            return Err(lines.err(at, format!("the column {name} appears twice")));
        }
        cols.push(c);
    }
    for key in [0, 1] {
        if !cols.contains(&key) {
            return Err(lines.err(at, format!("the table needs the column {}", table[key].name)));
        }
    }
    Ok(cols)
}

/// A finite f64 written as Rust reads it.
fn number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("malformed number {s:?}")),
    }
}

fn bus_id(s: &str) -> Result<u32, String> {
    s.parse::<u32>().map_err(|_| format!("a bus number must be a whole number, not {s:?}"))
}

fn cells<'a>(text: &'a str, cols: &[usize], table: &[Column]) -> Result<Vec<&'a str>, String> {
    let cells: Vec<&str> = text.split_whitespace().collect();
    if cells.len() != cols.len() {
        let names: Vec<&str> = cols.iter().map(|&c| table[c].name).collect();
        return Err(format!("expected {} values ({}), found {}", cols.len(), names.join(" "), cells.len()));
    }
    Ok(cells)
}

fn bus_row(text: &str, cols: &[usize]) -> Result<Bus, String> {
    let cells = cells(text, cols, &BUS_COLUMNS)?;
    let mut bus = Bus { id: 0, kind: BusKind::Pq, pd: 0.0, qd: 0.0, pg: 0.0, vset: 1.0, gs: 0.0, bs: 0.0 };
    // The type first: it decides what V_pu may be.
    let kind_at = cols.iter().position(|&c| c == 1).expect("checked in the header");
    bus.kind = match cells[kind_at].to_ascii_lowercase().as_str() {
        "slack" => BusKind::Slack,
        "pv" => BusKind::Pv,
        "pq" => BusKind::Pq,
        _ => return Err(format!("unknown bus type {:?} (slack, PV or PQ)", cells[kind_at])),
    };
    for (&c, &cell) in cols.iter().zip(&cells) {
        match (c, bus.kind, cell) {
            (0, ..) => bus.id = bus_id(cell)?,
            (1, ..) => {}
            (V_COLUMN, BusKind::Pq, "-") => {}
            (V_COLUMN, BusKind::Pq, _) => {
                return Err(format!("a PQ bus has no voltage set point: write - for V_pu, not {cell:?}"))
            }
            (V_COLUMN, kind, "-") => {
                return Err(format!("a {} bus needs a voltage set point V_pu", kind.word()))
            }
            _ => {
                *bus_value(&mut bus, c) = number(cell).map_err(|m| format!("{}: {m}", BUS_COLUMNS[c].name))?
            }
        }
    }
    Ok(bus)
}

fn branch_row(text: &str, cols: &[usize]) -> Result<Branch, String> {
    let cells = cells(text, cols, &BRANCH_COLUMNS)?;
    let mut br = Branch { from: 0, to: 0, r: 0.0, x: 0.0, b: 0.0, tap: 1.0 };
    for (&c, &cell) in cols.iter().zip(&cells) {
        match c {
            0 => br.from = bus_id(cell)?,
            1 => br.to = bus_id(cell)?,
            _ => {
                *branch_value(&mut br, c) =
                    number(cell).map_err(|m| format!("{}: {m}", BRANCH_COLUMNS[c].name))?
            }
        }
    }
    Ok(br)
}

fn parse_question(s: &str) -> Option<Question> {
    let (analysis, rest) = if let Some(r) = s.strip_prefix("using a DC power flow, ") {
        (Analysis::Dc, r)
    } else {
        (Analysis::Ac, s.strip_prefix("using an AC power flow, ")?)
    };
    let quantity = if let Some(v) = between(rest, &ANGLE) {
        Quantity::VoltageAngle { bus: v[0].parse().ok()? }
    } else if let Some(v) = between(rest, &MAGNITUDE) {
        Quantity::VoltageMagnitude { bus: v[0].parse().ok()? }
    } else {
        let v = between(rest, &FLOW)?;
        let (from, to, at): (u32, u32, u32) = (v[0].parse().ok()?, v[1].parse().ok()?, v[2].parse().ok()?);
        if at != from {
            return None;
        }
        Quantity::ActivePowerFlow { from, to }
    };
    Some(Question { analysis, quantity })
}
