//! `scrape`: fetch a `/metrics` endpoint and test one selector.

use serde::Deserialize;

/// `check: { scrape: { url: ..., metric: 'up{job="x"}', below: 1 } }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeParams {
    pub target: Option<String>,
    pub url: Option<String>,
    /// A metric selector with label matchers.
    pub metric: String,
    /// Failing when a matched sample is above this.
    pub above: Option<f64>,
    /// Failing when a matched sample is below this.
    pub below: Option<f64>,
}
