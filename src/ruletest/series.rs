//! The series notation of rule tests: a check's outcomes over time.
//!
//! `ok x10 fail x5 unreachable unknown ok`: each word is one outcome lasting one
//! `interval`; `xN` repeats the word before it N times in all (`fail x5` is
//! five intervals failing; `failx5` also works). After the last value the
//! last outcome holds. Unlike promtool, where `1x2` expands to three
//! samples, `fail x5` means exactly five.

/// One scripted observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Ok,
    Fail,
    /// A silent target (the verdict, as `medic run` would judge it with
    /// medic's vantage healthy): failing.
    Unreachable,
    Unknown,
}

impl Value {
    fn parse(word: &str) -> Option<Value> {
        match word {
            "ok" => Some(Value::Ok),
            "fail" | "failing" => Some(Value::Fail),
            "unknown" => Some(Value::Unknown),
            "unreachable" => Some(Value::Unreachable),
            _ => None,
        }
    }
}

/// The longest series accepted (a week of 1-second intervals).
pub const MAX_VALUES: usize = 7 * 24 * 3600;

/// Parses a series; the error names the offending word.
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    let mut out: Vec<Value> = Vec::new();
    let mut last_was_value = false;
    for word in text.split_whitespace() {
        if word == "x" {
            return Err("\"x\" needs a count, as in \"fail x5\"".into());
        }
        let (head, rep) = match word.find('x') {
            // `x5` alone repeats the value before it; `failx5` inline.
            Some(i) if word[i + 1..].chars().all(|c| c.is_ascii_digit()) && i + 1 < word.len() => {
                (&word[..i], Some(&word[i + 1..]))
            }
            _ => (word, None),
        };
        if !head.is_empty() {
            let v = Value::parse(head).ok_or_else(|| {
                format!("unknown outcome {head:?} in series (expected ok, fail, unreachable or unknown, each optionally followed by xN)")
            })?;
            out.push(v);
            last_was_value = true;
        }
        if let Some(rep) = rep {
            let n: usize = rep
                .parse()
                .map_err(|_| format!("repeat count {rep:?} is too large"))?;
            if n == 0 {
                return Err(format!("{word:?}: a repeat count must be at least 1"));
            }
            let Some(&v) = out.last().filter(|_| last_was_value) else {
                return Err(format!(
                    "{word:?} repeats nothing: write it after an outcome, as in \"fail x5\""
                ));
            };
            if out.len() + n - 1 > MAX_VALUES {
                return Err(format!("the series is longer than {MAX_VALUES} values"));
            }
            out.extend(std::iter::repeat_n(v, n - 1));
            last_was_value = false;
        }
    }
    if out.is_empty() {
        return Err("an empty series: write e.g. \"ok x10 fail x5 ok\"".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Value::*;

    #[test]
    fn expands_repeats_exactly() {
        assert_eq!(parse("fail x3 ok").unwrap(), vec![Fail, Fail, Fail, Ok]);
        assert_eq!(parse("failx2 okx1").unwrap(), vec![Fail, Fail, Ok]);
        assert_eq!(parse("ok").unwrap(), vec![Ok]);
        assert_eq!(parse(" unknown  x2 ").unwrap(), vec![Unknown, Unknown]);
    }

    #[test]
    fn rejects_bad_words() {
        assert!(parse("fial x3").unwrap_err().contains("\"fial\""));
        assert!(parse("x3").unwrap_err().contains("repeats nothing"));
        assert!(parse("fail x").unwrap_err().contains("needs a count"));
        assert!(parse("ok x3 x2").unwrap_err().contains("repeats nothing"));
        assert!(parse("ok x0").unwrap_err().contains("at least 1"));
        assert!(parse("ok x99999999999999999999999").is_err());
        assert!(parse("ok x999999999").unwrap_err().contains("longer than"));
        assert!(parse("").is_err());
    }
}
