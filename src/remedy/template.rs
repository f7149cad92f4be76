//! `${labels.NAME}` in plan parameters.
//!
//! An incident of a per-series symptom (one per label set, e.g. one per
//! deployment) runs its scenario's plan with the series' labels: a step's
//! parameters may say `${labels.deployment}` and each incident's actions
//! get that label's value. What expands: `exec` args, env values written
//! inline and cwd; `systemd-restart` unit; `redis.flush` pattern; the k8s
//! actions' optional `name` (the workload's name, overriding the target's)
//! and `k8s.set-env` values written inline. `$${` writes a literal `${`.
//! A label the series does not have refuses the step (a `labels` gate on
//! the timeline) rather than run it with a hole in its arguments.

use crate::observe::Labels;

/// Why a parameter could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not `${labels.NAME}`.
    #[error("{0}")]
    Syntax(String),
    /// The series has no such label.
    #[error("the series has no label {name:?} (its labels: {have})")]
    Missing { name: String, have: String },
    /// Expanded, the parameters are not valid (e.g. a unit named `-x`).
    #[error("with the series' labels: {0}")]
    Invalid(String),
}

/// Whether `text` has anything to expand.
pub fn has_vars(text: &str) -> bool {
    text.contains("${")
}

/// Checks the syntax of every `${...}` in `text` (no labels needed):
/// what `medic check` runs on rule files.
pub fn check(text: &str) -> Result<(), TemplateError> {
    walk(text, &mut |_| Ok(String::new())).map(|_| ())
}

/// `text` with every `${labels.NAME}` replaced by that label's value.
pub fn expand(text: &str, labels: &Labels) -> Result<String, TemplateError> {
    walk(text, &mut |name| {
        labels
            .get(name)
            .cloned()
            .ok_or_else(|| TemplateError::Missing {
                name: name.to_string(),
                have: if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })
    })
}

/// [`expand`] over an optional value.
pub fn expand_opt(text: &Option<String>, labels: &Labels) -> Result<Option<String>, TemplateError> {
    text.as_deref().map(|t| expand(t, labels)).transpose()
}

fn walk(
    text: &str,
    value: &mut dyn FnMut(&str) -> Result<String, TemplateError>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err(TemplateError::Syntax(format!(
                    "{text:?}: `${{` without its closing `}}`"
                )));
            };
            let var = &r[..end];
            let Some(name) = var.strip_prefix("labels.").filter(|n| is_label_name(n)) else {
                return Err(TemplateError::Syntax(format!(
                    "{text:?}: unknown variable `${{{var}}}`: the only variables are ${{labels.NAME}} (a label of the incident's series); write $${{ for a literal ${{"
                )));
            };
            out.push_str(&value(name)?);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        [("deployment", "api"), ("namespace", "prod")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_labels() {
        assert_eq!(
            expand(
                "deployment/${labels.deployment} -n ${labels.namespace}",
                &labels()
            )
            .unwrap(),
            "deployment/api -n prod"
        );
        assert_eq!(
            expand("no vars, $HOME stays", &labels()).unwrap(),
            "no vars, $HOME stays"
        );
        assert_eq!(
            expand("$${labels.x} is literal", &labels()).unwrap(),
            "${labels.x} is literal"
        );
    }

    #[test]
    fn missing_label_says_which_and_what_there_is() {
        let e = expand("${labels.pod}", &labels()).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"the series has no label "pod" (its labels: deployment, namespace)"#
        );
        let e = expand("${labels.pod}", &Labels::new()).unwrap_err();
        assert!(e.to_string().ends_with("(its labels: none)"), "{e}");
    }

    #[test]
    fn bad_syntax_is_reported() {
        assert!(check("${labels.deployment}").is_ok());
        assert!(
            check("${env.HOME}")
                .unwrap_err()
                .to_string()
                .contains("unknown variable `${env.HOME}`")
        );
        assert!(
            check("${labels.deployment")
                .unwrap_err()
                .to_string()
                .contains("without its closing")
        );
        assert!(check("${labels.1x}").is_err());
    }
}
