//! Parsing and validating rule files.

use std::path::PathBuf;

use super::model::Scenario;
use crate::config::Config;
use crate::diag::Diagnostics;

/// Loads every rule file named by `paths` (files, or directories of
/// `*.yaml`/`*.yml`), validated against `config`. Either every scenario, or
/// every problem found in any of them.
pub fn load_paths(paths: &[PathBuf], config: &Config) -> Result<Vec<Scenario>, Diagnostics> {
    let _ = (paths, config);
    todo!("rule loading")
}

/// Parses and validates one rule file's text; `path` names it in errors.
pub fn load_str(path: &str, text: &str, config: &Config) -> Result<Scenario, Diagnostics> {
    let _ = (path, text, config);
    todo!("rule loading")
}
