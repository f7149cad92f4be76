//! `medic check`: load the config and every rule file, report all problems.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::load::load_paths_warned;
use crate::config::load::{load_checked, process_env};
use crate::diag::{Diagnostic, Diagnostics};

/// The config file used when none is named.
pub const DEFAULT_CONFIG: &str = "medic.yaml";

/// What a successful check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    pub scenarios: usize,
    pub symptoms: usize,
    pub steps: usize,
    /// Rule files read (one scenario each).
    pub files: usize,
    /// Allowed, but probably not meant (config first, then rules); printed
    /// before the summary, they do not fail the check.
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for CheckSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} scenarios, {} symptoms, {} steps in {} files",
            self.scenarios, self.symptoms, self.steps, self.files
        )
    }
}

/// Checks the config at `config_path` (default [`DEFAULT_CONFIG`], with
/// `MEDIC_` environment overrides) and the rule files in `rule_paths` (default:
/// the config's `rules`, relative to the config file). Config and rule
/// problems are reported together; a config that does not parse still lets
/// the rules be checked for everything but their references to it.
pub fn check(
    config_path: Option<&Path>,
    rule_paths: &[PathBuf],
) -> Result<CheckSummary, Diagnostics> {
    check_with_env(config_path, rule_paths, process_env())
}

/// Whether a `metrics.per_symptom` entry (`SCENARIO/SYMPTOM` or
/// `SCENARIO`) names something of `sc`.
fn per_symptom_matches(entry: &str, sc: &super::Scenario) -> bool {
    match entry.split_once('/') {
        Some((name, symptom)) => sc.name == name && sc.symptoms.iter().any(|s| s.name == symptom),
        None => sc.name == entry,
    }
}

/// Where `entry` is written after `per_symptom` in the config file
/// (1-based line and column; 0, 0 when not found, e.g. set by the env).
fn position_of(config_path: &Path, entry: &str) -> (usize, usize) {
    let Ok(text) = std::fs::read_to_string(config_path) else {
        return (0, 0);
    };
    let Some(start) = text.find("per_symptom") else {
        return (0, 0);
    };
    let Some(at) = text[start..].find(entry).map(|i| start + i) else {
        return (0, 0);
    };
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// [`check`] with `env` standing in for the process environment (tests).
pub fn check_with_env(
    config_path: Option<&Path>,
    rule_paths: &[PathBuf],
    env: HashMap<String, String>,
) -> Result<CheckSummary, Diagnostics> {
    let config_path = config_path.unwrap_or(Path::new(DEFAULT_CONFIG));
    let (config, mut diags) = load_checked(config_path, env);
    let rule_paths: Vec<PathBuf> = if !rule_paths.is_empty() {
        rule_paths.to_vec()
    } else if let Some(c) = &config {
        super::config_paths(c)
    } else {
        // The config is broken: check the default rules beside it.
        let dir = config_path.parent().filter(|p| !p.as_os_str().is_empty());
        vec![dir.map_or_else(|| PathBuf::from("rules"), |d| d.join("rules"))]
    };
    let (scenarios, mut rule_diags, rule_warnings) =
        load_paths_warned(&rule_paths, config.as_ref());
    diags.append(&mut rule_diags);
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    let unmatched: Vec<Diagnostic> = config
        .iter()
        .flat_map(|c| &c.metrics.per_symptom)
        .filter(|e| !scenarios.iter().any(|sc| per_symptom_matches(e, sc)))
        .map(|e| {
            let (line, col) = position_of(config_path, e);
            Diagnostic::new(
                config_path.display().to_string(),
                line,
                col,
                format!(
                    "warning: metrics.per_symptom: {e:?} names no loaded scenario or SCENARIO/SYMPTOM: it adds no series"
                ),
            )
        })
        .collect();
    let mut warnings = config.map(|c| c.warnings).unwrap_or_default();
    warnings.extend(rule_warnings);
    warnings.extend(unmatched);
    Ok(CheckSummary {
        scenarios: scenarios.len(),
        symptoms: scenarios.iter().map(|s| s.symptoms.len()).sum(),
        steps: scenarios.iter().map(|s| s.plan.len()).sum(),
        files: scenarios.len(),
        warnings,
    })
}
