//! Scenario rule files: one YAML file per scenario.
//!
//! Loading keeps positions so every problem is reported as
//! `path:line:col: message`, and validation collects every problem rather
//! than stopping at the first.

pub mod check;
mod configured;
mod gotemplate;
pub mod load;
pub mod model;
mod overlap;
pub mod prometheus;

pub use check::{CheckSummary, check, check_with_env};
pub use configured::{config_paths, load_configured};
pub use load::{load_paths, load_str};
pub use model::{Scenario, Step, Symptom, When};

#[cfg(test)]
mod config_check_tests;
#[cfg(all(test, not(feature = "aws"), not(feature = "kubernetes")))]
mod without_features;
