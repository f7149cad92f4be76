//! Diagnostics that point at the input: `path:line:col: message`.

use std::fmt;

/// One problem found in an input file, with its position (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub path: String,
    /// 1-based line; 0 when the position is unknown.
    pub line: usize,
    /// 1-based column; 0 when the position is unknown.
    pub col: usize,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a known position.
    pub fn new(path: impl Into<String>, line: usize, col: usize, msg: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            line,
            col,
            message: msg.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path, self.line, self.col, self.message
            )
        }
    }
}

/// Every problem found in a set of inputs, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// `did you mean "x"?` for a near-miss among `candidates`, if one is close.
pub fn did_you_mean<'a>(
    got: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(got, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean {c:?}?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let kinds = ["exec", "systemd-restart", "redis.flush"];
        assert_eq!(
            did_you_mean("exce", kinds).as_deref(),
            Some("did you mean \"exec\"?")
        );
        assert_eq!(
            did_you_mean("redis.flsh", kinds).as_deref(),
            Some("did you mean \"redis.flush\"?")
        );
        assert_eq!(did_you_mean("teleport", kinds), None);
    }

    #[test]
    fn displays_position() {
        let d = Diagnostic::new("rules/a.yaml", 3, 5, "bad");
        assert_eq!(d.to_string(), "rules/a.yaml:3:5: bad");
    }
}
