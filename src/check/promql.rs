//! `promql`: an instant query against the Prometheus HTTP API
//! (`GET /api/v1/query`).
//!
//! The query states the trouble, as an alerting rule's `expr` does: every
//! series of a vector result is failing, each its own symptom instance keyed
//! by its labels (so `sum by (deployment) (...) > 0.05` opens one incident
//! per deployment); an empty result is ok. A scalar result is failing when
//! it is non-zero (write `... > bool 5`), ok when zero. Prometheus's error
//! answers (`bad_data`, `execution`, `timeout`, ...) and an unreachable or
//! garbled Prometheus are *unknown*, with Prometheus's own error text: medic
//! cannot see, it does not say "broken". The symptom's timeout is passed to
//! Prometheus (`timeout=`) and bounds the HTTP request.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{BuildError, Check};
use crate::config::{Config, PrometheusTarget, TargetConfig};
use crate::observe::{Labels, Observation, Outcome, Series};

/// `check: { promql: 'EXPR' }` or `{ promql: { query: EXPR, source: prom } }`.
/// Each series of the result is failing; an empty result is ok.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromqlParams {
    pub query: String,
    /// A config target of kind `prometheus`; default: the only one.
    pub source: Option<String>,
}

/// The config target a promql check (or a `source` check) queries: `name`
/// if given, else the config's only prometheus target.
pub fn prometheus_target<'c>(
    name: Option<&str>,
    config: &'c Config,
) -> Result<(String, &'c PrometheusTarget), BuildError> {
    match name {
        Some(n) => match config.targets.get(n) {
            Some(TargetConfig::Prometheus(p)) => Ok((n.to_string(), p)),
            _ => Err(BuildError::Invalid(format!(
                "target {n:?} is not a prometheus target"
            ))),
        },
        None => {
            let mut proms = config.targets.iter().filter_map(|(n, t)| match t {
                TargetConfig::Prometheus(p) => Some((n.clone(), p)),
                _ => None,
            });
            match (proms.next(), proms.next()) {
                (Some(one), None) => Ok(one),
                (None, _) => Err(BuildError::Invalid(
                    "no prometheus target in the config".into(),
                )),
                (Some(_), Some(_)) => Err(BuildError::Invalid(
                    "several prometheus targets: name one with `source:`".into(),
                )),
            }
        }
    }
}

/// An HTTP client for one Prometheus, with its credentials.
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    /// The config target's name, for messages.
    pub name: String,
    /// The server's base URL (no trailing slash).
    pub base: String,
    target: PrometheusTarget,
    client: reqwest::Client,
}

impl PrometheusClient {
    pub fn new(name: String, target: &PrometheusTarget) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError::Invalid(format!("http client: {e}")))?;
        reqwest::Url::parse(&target.url)
            .map_err(|e| BuildError::Invalid(format!("prometheus {name}: url: {e}")))?;
        Ok(PrometheusClient {
            name,
            base: target.url.trim_end_matches('/').to_string(),
            target: target.clone(),
            client,
        })
    }

    /// GET `path` with `params`, credentials attached, bounded by `timeout`.
    pub async fn get(
        &self,
        path: &str,
        params: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<reqwest::Response, GetError> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)
            .map_err(|e| GetError::Setup(format!("url: {e}")))?;
        let mut req = self.client.get(url).timeout(timeout);
        if let Some(token) = &self.target.bearer_token {
            let t = token
                .resolve()
                .map_err(|e| GetError::Setup(format!("bearer_token: {e}")))?;
            req = req.bearer_auth(t.expose());
        }
        if let Some(auth) = &self.target.basic_auth {
            let p = auth
                .password
                .resolve()
                .map_err(|e| GetError::Setup(format!("basic_auth password: {e}")))?;
            req = req.basic_auth(&auth.username, Some(p.expose()));
        }
        req.send()
            .await
            .map_err(|e| GetError::Unreachable(describe_error(&e)))
    }
}

/// Why a request to Prometheus was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// medic's side: a credential it cannot read, a bad URL.
    #[error("{0}")]
    Setup(String),
    /// No answer: refused, timed out, reset.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// reqwest's error with its causes (the useful part is in the chain).
fn describe_error(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A runnable `promql` check.
#[derive(Debug)]
pub struct PromqlCheck {
    query: String,
    prom: PrometheusClient,
    timeout: Duration,
}

impl PromqlCheck {
    pub fn build(p: &PromqlParams, timeout: Duration, config: &Config) -> Result<Self, BuildError> {
        let (name, target) = prometheus_target(p.source.as_deref(), config)?;
        Ok(PromqlCheck {
            query: p.query.clone(),
            prom: PrometheusClient::new(name, target)?,
            timeout,
        })
    }

    /// The query it runs.
    pub fn query(&self) -> &str {
        &self.query
    }
}

/// Prometheus's answer envelope.
#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Sample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: Option<(f64, String)>,
    /// Native histograms come as `[ts, {count, sum, buckets}]`.
    histogram: Option<(f64, Histogram)>,
}

#[derive(Debug, Deserialize)]
struct Histogram {
    count: String,
}

/// Prometheus's float text (`"1"`, `"NaN"`, `"+Inf"`, `"-Inf"`).
fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

/// What an answer body (with its HTTP status) means.
pub(crate) fn interpret(source: &str, status: u16, body: &[u8]) -> Observation {
    let unknown = |m: String| Observation::Whole(Outcome::Unknown(m));
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string();
            return unknown(format!(
                "prometheus {source}: HTTP {status}, not an API answer ({e}): {text:?}"
            ));
        }
    };
    if answer.status != "success" {
        return unknown(format!(
            "prometheus {source}: {}: {}",
            answer.error_type.as_deref().unwrap_or("error"),
            answer.error.as_deref().unwrap_or("no error text")
        ));
    }
    match answer.data {
        None => unknown(format!("prometheus {source}: a success without data")),
        Some(Data::Vector(samples)) => Observation::Series(
            samples
                .into_iter()
                .map(|s| {
                    let value = match (&s.value, &s.histogram) {
                        (Some((_, v)), _) => parse_value(v),
                        (None, Some((_, h))) => parse_value(&h.count),
                        (None, None) => f64::NAN,
                    };
                    let labels: Labels = s.metric;
                    let detail = format!("{} = {value}", crate::observe::labels_key(&labels));
                    Series {
                        labels,
                        value,
                        detail,
                    }
                })
                .collect(),
        ),
        Some(Data::Scalar((_, v))) => {
            let value = parse_value(&v);
            if value == 0.0 {
                Observation::Series(Vec::new())
            } else {
                Observation::Series(vec![Series {
                    labels: Labels::new(),
                    value,
                    detail: format!("scalar = {v}"),
                }])
            }
        }
        Some(Data::Matrix(_)) => unknown(format!(
            "prometheus {source}: the query gives a range vector (matrix); a promql check needs an instant vector or a scalar"
        )),
        Some(Data::String(_)) => unknown(format!(
            "prometheus {source}: the query gives a string; a promql check needs an instant vector or a scalar"
        )),
    }
}

/// Prometheus's `timeout=` parameter: whole milliseconds.
fn timeout_param(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

#[async_trait::async_trait]
impl Check for PromqlCheck {
    async fn run(&self) -> Outcome {
        self.observe().await.into_outcome()
    }

    async fn observe(&self) -> Observation {
        let timeout = timeout_param(self.timeout);
        let resp = match self
            .prom
            .get(
                "/api/v1/query",
                &[("query", self.query.as_str()), ("timeout", &timeout)],
                self.timeout,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Observation::Whole(Outcome::Unknown(format!(
                    "prometheus {} at {} {e}",
                    self.prom.name, self.prom.base
                )));
            }
        };
        let status = resp.status().as_u16();
        match resp.bytes().await {
            Ok(body) => interpret(&self.prom.name, status, &body),
            Err(e) => Observation::Whole(Outcome::Unknown(format!(
                "prometheus {}: reading the answer: {}",
                self.prom.name,
                describe_error(&e)
            ))),
        }
    }

    fn per_series(&self) -> bool {
        true
    }
}

impl super::CheckKind for PromqlParams {
    /// `{promql: EXPR}` is `{promql: {query: EXPR}}`.
    fn shorthand(scalar: &marked_yaml::Node) -> Option<marked_yaml::Node> {
        Some(crate::yaml::wrap("query", scalar.clone()))
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::pos;
        v.non_empty(p, "query", &self.query);
        match &self.source {
            Some(src) => v.target(p, "source", src, &["prometheus"], "a promql check"),
            None => default_prometheus(v, pos(p)),
        }
    }

    fn target(&self) -> Option<&str> {
        self.source.as_deref()
    }

    fn build(
        &self,
        timeout: Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(PromqlCheck::build(
            self, timeout, config,
        )?))
    }
}

/// Without `source:`, the config must have exactly one prometheus target.
fn default_prometheus(v: &mut crate::config::refs::Refs, at: crate::yaml::Pos) {
    let Some(cfg) = v.config else { return };
    let proms: Vec<&str> = cfg
        .targets
        .iter()
        .filter(|(_, t)| t.kind() == "prometheus")
        .map(|(n, _)| n.as_str())
        .collect();
    match proms.len() {
        1 => {}
        0 => v.err(
            at,
            "a promql check needs a prometheus target in the config (none is defined)",
        ),
        _ => v.err(
            at,
            format!(
                "several prometheus targets ({}): name one with `source:`",
                proms.join(", ")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../shared/fixtures/prometheus-api/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path)
            .or_else(|_| std::fs::read(format!("/work/shared/fixtures/prometheus-api/{name}")))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn vector_fixture_gives_one_failing_series_per_sample() {
        let Observation::Series(s) = interpret("prom", 200, &fixture("query-vector.json")) else {
            panic!("not series")
        };
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["job"], "prometheus");
        assert_eq!(s[0].labels["instance"], "localhost:9090");
        assert_eq!(s[0].value, 1.0);
        assert_eq!(s[1].labels["job"], "node");
        assert_eq!(s[1].value, 0.0);
        assert_eq!(
            s[1].detail,
            r#"{__name__="up",instance="localhost:9100",job="node"} = 0"#
        );
    }

    #[test]
    fn native_histogram_sample_counts() {
        let Observation::Series(s) =
            interpret("prom", 200, &fixture("query-vector-native-histogram.json"))
        else {
            panic!("not series")
        };
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].value, 12.5);
    }

    #[test]
    fn scalar_fixture_non_zero_is_failing_zero_is_ok() {
        let o = interpret("prom", 200, &fixture("query-scalar.json"));
        assert_eq!(o.outcome(), Outcome::Failing("scalar = 42".into()));
        let zero = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"0"]}}"#;
        assert_eq!(interpret("prom", 200, zero), Observation::Series(vec![]));
    }

    #[test]
    fn error_fixture_is_unknown_with_prometheus_text() {
        let o = interpret("prom", 503, &fixture("error-tsdb-not-ready.json"));
        assert_eq!(
            o,
            Observation::Whole(Outcome::Unknown(
                "prometheus prom: internal: TSDB not ready".into()
            ))
        );
    }

    #[test]
    fn garbage_and_matrix_are_unknown() {
        let o = interpret("prom", 502, b"<html>Bad Gateway</html>");
        let Observation::Whole(Outcome::Unknown(m)) = o else {
            panic!("{o:?}")
        };
        assert!(
            m.starts_with("prometheus prom: HTTP 502, not an API answer"),
            "{m}"
        );
        assert!(m.ends_with(r#""<html>Bad Gateway</html>""#), "{m}");
        let o = interpret("prom", 200, &fixture("query_range-matrix.json"));
        assert!(
            matches!(&o, Observation::Whole(Outcome::Unknown(m)) if m.contains("range vector")),
            "{o:?}"
        );
    }

    #[test]
    fn special_float_values() {
        assert_eq!(parse_value("+Inf"), f64::INFINITY);
        assert_eq!(parse_value("-Inf"), f64::NEG_INFINITY);
        assert!(parse_value("NaN").is_nan());
        assert_eq!(parse_value("1e3"), 1000.0);
        assert_eq!(timeout_param(Duration::from_secs(2)), "2000ms");
    }
}
