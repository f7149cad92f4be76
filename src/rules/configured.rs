//! The rule files a config names (`rules:`), resolved and loaded: the one
//! way `medic run`, `check`, `probe`, `report` and `drill` find their rules.

use std::path::PathBuf;

use crate::config::Config;
use crate::diag::Diagnostics;

use super::model::Scenario;

/// The config's `rules:` paths, relative ones resolved against the
/// config file's directory.
pub fn config_paths(config: &Config) -> Vec<PathBuf> {
    config
        .rules
        .iter()
        .map(|p| config.resolve_path(p))
        .collect()
}

/// Loads every rule file the config names, validated against it
/// ([`super::load_paths`] over [`config_paths`]).
pub fn load_configured(config: &Config) -> Result<Vec<Scenario>, Diagnostics> {
    super::load_paths(&config_paths(config), config)
}
