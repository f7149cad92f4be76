//! `medic check`: load the config and every rule file, report all problems.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::load::load_paths_checked;
use crate::config::load::{load_checked, process_env};
use crate::diag::Diagnostics;

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
    /// Allowed but risky (the config's [`crate::config::Config::warnings`]);
    /// printed as `warning: path:line:col: ...`, they do not fail the check.
    pub warnings: Vec<crate::diag::Diagnostic>,
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
    let (scenarios, mut rule_diags) = load_paths_checked(&rule_paths, config.as_ref());
    diags.append(&mut rule_diags);
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    Ok(CheckSummary {
        scenarios: scenarios.len(),
        symptoms: scenarios.iter().map(|s| s.symptoms.len()).sum(),
        steps: scenarios.iter().map(|s| s.plan.len()).sum(),
        files: scenarios.len(),
        warnings: config.map(|c| c.warnings).unwrap_or_default(),
    })
}
