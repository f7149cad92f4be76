//! What a check or action kind's parameters name in the config (targets,
//! jobs), checked where the rule file says it: every kind's `validate`
//! gets a [`Refs`], the rule file's cursor beside the config.

use std::ops::{Deref, DerefMut};

use marked_yaml::Node;

use super::Config;
use crate::yaml::{Cursor, Pos, field_pos, unknown_field};

/// The rule file's cursor (where problems go) and the config its
/// references are checked against.
pub(crate) struct Refs<'c, 'a> {
    pub y: &'c mut Cursor<'a>,
    /// `None`: the config did not load; reference checks are skipped, so
    /// its errors do not come back as a cascade of rule errors.
    pub config: Option<&'c Config>,
}

impl<'a> Deref for Refs<'_, 'a> {
    type Target = Cursor<'a>;
    fn deref(&self) -> &Cursor<'a> {
        self.y
    }
}

impl DerefMut for Refs<'_, '_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.y
    }
}

impl Refs<'_, '_> {
    /// Checks a `target`-like field of `p` against the config's targets.
    pub fn target(&mut self, p: &Node, field: &str, name: &str, kinds: &[&str], user: &str) {
        self.target_at(field_pos(p, field), name, kinds, user);
    }

    /// The target `name`, written at `at`, must exist and be of one of
    /// `kinds` (`user` says who needs it).
    pub fn target_at(&mut self, at: Pos, name: &str, kinds: &[&str], user: &str) {
        let Some(cfg) = self.config else { return };
        match cfg.targets.get(name) {
            None if cfg.targets.is_empty() => self.err(
                at,
                format!("unknown target {name:?} (the config defines no targets)"),
            ),
            None => {
                let known: Vec<&str> = cfg.targets.keys().map(String::as_str).collect();
                self.err(at, unknown_field("target", name, &known));
            }
            Some(t) if !kinds.contains(&t.kind()) => self.err(
                at,
                format!(
                    "target {name:?} is a {} target, but {user} needs {}",
                    t.kind(),
                    a_kind(kinds)
                ),
            ),
            Some(_) => {}
        }
    }

    /// A string parameter that must say something.
    pub fn non_empty(&mut self, p: &Node, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.err(field_pos(p, field), format!("{field:?} must not be empty"));
        }
    }

    /// A URL parameter: http or https.
    pub fn url(&mut self, p: &Node, field: &str, url: &str) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.err(
                field_pos(p, field),
                format!("{field} {url:?} must start with http:// or https://"),
            );
        }
    }
}

/// "a redis target", "a tcp, redis or postgres target".
fn a_kind(kinds: &[&str]) -> String {
    let list = match kinds {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    let article = if list.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {list} target")
}
