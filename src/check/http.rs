//! `http`: status code, latency limit and optional body match.

use serde::Deserialize;

use crate::duration::Dur;

/// `check: { http: { url: ..., status: 200, max_latency: 500ms, body: "ok" } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpParams {
    /// A config target of kind `http`...
    pub target: Option<String>,
    /// ...or a URL written inline.
    pub url: Option<String>,
    /// Expected status codes; default: any 2xx.
    #[serde(default)]
    pub status: Vec<u16>,
    /// Slower answers count as failing.
    pub max_latency: Option<Dur>,
    /// A regular expression the body must match.
    pub body: Option<String>,
}

/// Runtime form.
pub struct HttpCheck {}
impl HttpCheck {
    pub fn build(_p: &HttpParams, _c: &crate::config::Config) -> Result<Self, super::BuildError> {
        todo!()
    }
}
#[async_trait::async_trait]
impl super::Check for HttpCheck {
    async fn run(&self) -> super::Outcome {
        todo!()
    }
}
