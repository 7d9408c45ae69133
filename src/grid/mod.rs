//! The power-flow tasks: a grid case and a question about it, the fixed text form a
//! prompt carries them in, the DC system the `linear-solve` expert solves, and the
//! PYPOWER ground truth (tests/fixtures/powerflow/).
//!
//! # The text form
//!
//! ```text
//! Power grid, base 100 MVA, 3 buses, 3 branches.
//! Buses (id type Pd_MW Qd_MVAr Pg_MW V_pu Bs_MVAr):
//! 1 slack 0 0 0 1.04 0
//! 2 PV 20 10 60 1.02 0
//! 3 PQ 90 30 0 - 19
//! Branches (from to r_pu x_pu b_pu tap):
//! 1 2 0.01 0.06 0.03 1
//! 1 3 0.02 0.12 0.05 0.978
//! 2 3 0.03 0.18 0.02 1
//! Question: using an AC power flow, what is the voltage magnitude at bus 3 in p.u.?
//! ```
//!
//! - The header gives the base power (MVA) and the numbers of bus and branch rows.
//! - Each table's header line names its columns; every row has one value per column,
//!   separated by spaces. Bus columns: `id` (a whole number), `type` (`slack`, `PV`
//!   or `PQ`), `Pd_MW`, `Qd_MVAr` (load), `Pg_MW` (generation), `V_pu` (voltage set
//!   point of a slack or PV bus; `-` at PQ buses), `Gs_MW`, `Bs_MVAr` (shunt at
//!   1 p.u.). Branch columns: `from`, `to` (bus ids), `r_pu`, `x_pu`, `b_pu` (series
//!   resistance and reactance, total charging susceptance, p.u. on the base), `tap`
//!   (off-nominal ratio at the from end, 1 = none).
//! - A DC question's tables have `id type Pd_MW Pg_MW [Gs_MW]` and `from to x_pu
//!   [tap]`; an AC question's add `Qd_MVAr`, `V_pu`, `[Bs_MVAr]`, `[r_pu]`, `[b_pu]`.
//!   A bracketed column is written only when some row differs from its default (0; 1
//!   for `tap`); a left-out column means the default for every row. This keeps a
//!   30-bus prompt short: SmolLM2's tokenizer spends one token per digit and one per
//!   separator.
//! - Numbers are written in Rust's shortest round-trip form and read with
//!   `str::parse::<f64>`, so the numbers T2C reads are bit for bit the case's.
//! - The question, after `Question: `, is one of
//!   `using a DC|an AC power flow, what is the voltage angle at bus N in degrees?`,
//!   `... what is the voltage magnitude at bus N in p.u.?` (AC only), and
//!   `... what is the active power flow from bus F to bus T in MW, measured at bus F?`
//!   (the branch listed from F to T; power entering it at F).
//!
//! [`parse`] reads the last grid block of a text (a ChatML prompt and a partial
//! answer around it are fine) and the first question after it, and names the line
//! of anything wrong: a malformed number, a missing column, an unknown bus in a
//! branch, two slack buses, a duplicate bus id, a question about parallel branches.
//!
//! Out of scope (the fixture script checks the IEEE cases have none): phase
//! shifters, out-of-service elements, generator reactive limits, several slack buses.

mod dc;
mod fixture;
mod model;
mod text;

pub use dc::{dc_system, dc_unknowns};
pub use fixture::{load_cases, parse_cases, AcSolution, DcSolution, SolvedCase};
pub use model::{Analysis, Branch, Bus, BusKind, Case, CaseError, Item, Quantity, Question, Target};
pub use text::{parse, render, GridTextError};
