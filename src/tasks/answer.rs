//! Reading the number an answer gives, and where it starts.
//!
//! Answers to the grid questions are one sentence ("The voltage angle at bus 5 is
//! -4.35 degrees."), but they name buses and branches with numbers too. The answer's
//! number is the first number in the text that is not such a label: not right after
//! "bus", "buses", "branch", "line", "from" or "to", not the second half of a pair
//! like "4-5", and not an operand of a formula: a number followed by `=`, `*`, `/`,
//! `×` or `÷` ("... / 100 = 19.098398." gives 19.098398, the equation's value). A '-'
//! right after a digit joins a pair; it is never a sign.
//!
//! The same rule labels the router's training data (where the answer's number
//! begins is where the router should have fired) and scores the answers in
//! `pimoe eval`, so both read an answer the same way.

use std::ops::Range;

/// Words after which a number is a label, not a value (compared lowercase).
const LABEL_WORDS: [&str; 6] = ["bus", "buses", "branch", "line", "from", "to"];

/// The answer's number and the byte range of its text (sign included).
pub fn answer_number(text: &str) -> Option<(f64, Range<usize>)> {
    let r = numbers(text).into_iter().find(|r| !is_label(text, r) && !is_operand(text, r))?;
    Some((text[r.clone()].parse().ok()?, r))
}

/// Every number in `text`: `[-+] digits [. digits] [e [-+] digits]`, or `.digits`.
fn numbers(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let digit_at = |k: usize| k < b.len() && b[k].is_ascii_digit();
        let starts = digit_at(i) || (b[i] == b'.' && digit_at(i + 1));
        let signed = (b[i] == b'-' || b[i] == b'+')
            && (digit_at(i + 1) || (i + 2 < b.len() && b[i + 1] == b'.' && digit_at(i + 2)))
            && !(i > 0 && b[i - 1].is_ascii_digit());
        // A digit run continuing a word ("x2", "MW3") is not a number.
        let glued = i > 0 && (b[i - 1].is_ascii_alphabetic() || b[i - 1] == b'_');
        if !(starts || signed) || glued {
            i += 1;
            continue;
        }
        let start = i;
        if signed {
            i += 1;
        }
        while digit_at(i) {
            i += 1;
        }
        if i < b.len() && b[i] == b'.' && digit_at(i + 1) {
            i += 1;
            while digit_at(i) {
                i += 1;
            }
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            let mut k = i + 1;
            if k < b.len() && (b[k] == b'-' || b[k] == b'+') {
                k += 1;
            }
            if digit_at(k) {
                i = k;
                while digit_at(i) {
                    i += 1;
                }
            }
        }
        out.push(start..i);
    }
    out
}

/// Whether the number at `r` is followed by an operator: part of a formula whose
/// value comes later.
fn is_operand(text: &str, r: &Range<usize>) -> bool {
    text[r.end..].trim_start_matches([' ', ')']).starts_with(['=', '*', '/', '×', '÷'])
}

/// Whether the number at `r` names a bus or branch.
fn is_label(text: &str, r: &Range<usize>) -> bool {
    let before = &text[..r.start];
    // The second half of a pair: "4-5", "4 - 5".
    let trimmed = before.trim_end();
    if let Some(rest) = trimmed.strip_suffix('-') {
        if rest.trim_end().ends_with(|c: char| c.is_ascii_digit()) {
            return true;
        }
    }
    let word = trimmed.split(|c: char| !c.is_alphabetic()).next_back().unwrap_or("").to_lowercase();
    trimmed.len() < before.len() && LABEL_WORDS.contains(&word.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<f64> {
        answer_number(text).map(|(v, _)| v)
    }

    #[test]
    fn skips_bus_and_branch_labels() {
        assert_eq!(value("The voltage magnitude at bus 5 in p.u. is approximately 1.04 volts."), Some(1.04));
        assert_eq!(
            value("The active power flow on branch 4-5 in MW is 0.0176, which is 1.76%."),
            Some(0.0176)
        );
        assert_eq!(value("The flow on branch 4 - 5 is -41.2 MW."), Some(-41.2));
        assert_eq!(value("The angle at Bus 12 is -4.35 degrees."), Some(-4.35));
        assert_eq!(value("From 3 to 7 the flow is 1e2 MW"), Some(100.0));
        assert_eq!(value("The angle at bus 5 is unknown."), None);
    }

    #[test]
    fn skips_the_operands_of_a_formula() {
        assert_eq!(
            value("Total power flow = (bus 5 to bus 7) * (bus 5 to bus 7) / 100 = 19.098398."),
            Some(19.098398)
        );
        assert_eq!(value("P = 2 * 3.5 = 7 MW"), Some(7.0));
        assert_eq!(value("It is (4 / 2) = 2.5 p.u."), Some(2.5));
        // A value with its unit, then a conversion: the value stands.
        assert_eq!(value("The flow is 19.09 MW = 0.1909 p.u."), Some(19.09));
        assert_eq!(value("x = 3 / 4"), Some(4.0));
    }

    #[test]
    fn signs_and_ranges() {
        let t = "The angle at bus 9 is -4.993421 degrees.";
        let (v, r) = answer_number(t).unwrap();
        assert_eq!(v, -4.993421);
        assert_eq!(&t[r], "-4.993421");
        assert_eq!(value("x2 is .5"), Some(0.5));
        assert_eq!(value("MW3 then +7"), Some(7.0));
        // An 'e' that starts a word is not an exponent.
        assert_eq!(value("is 3 eggs"), Some(3.0));
    }
}
