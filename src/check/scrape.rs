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
    #[serde(default, deserialize_with = "crate::yaml::threshold")]
    pub above: Option<f64>,
    /// Failing when a matched sample is below this.
    #[serde(default, deserialize_with = "crate::yaml::threshold")]
    pub below: Option<f64>,
}

use std::time::Duration;

use super::exposition::{self, Selector};
use super::{BuildError, Check};
use crate::config::{Config, TargetConfig};
use crate::observe::{Labels, Observation, Outcome, Series};

/// The largest body medic reads from a `/metrics` endpoint (node_exporter
/// on a big host writes a few MB).
const MAX_BODY: usize = 64 << 20;

/// A runnable `scrape` check: per series, one failing instance per
/// matching sample beyond the threshold.
#[derive(Debug)]
pub struct ScrapeCheck {
    url: String,
    client: reqwest::Client,
    /// Bounds each fetch (the symptom's timeout).
    timeout: Duration,
    auth: Option<Auth>,
    selector: Selector,
    above: Option<f64>,
    below: Option<f64>,
}

/// Credentials of a `prometheus` target (resolved at build time).
#[derive(Debug)]
enum Auth {
    Bearer(crate::secret::Secret),
    Basic(String, crate::secret::Secret),
}

impl ScrapeCheck {
    /// Builds from the rule's parameters: `url`, or a config target (an
    /// `http` target's URL as is; a `prometheus` target's `/metrics`, with
    /// its credentials). `timeout` bounds each fetch.
    pub fn build(p: &ScrapeParams, timeout: Duration, config: &Config) -> Result<Self, BuildError> {
        let invalid = BuildError::Invalid;
        let (url, auth) = match (&p.url, &p.target) {
            (Some(u), None) => (u.clone(), None),
            (None, Some(t)) => match config.targets.get(t) {
                Some(TargetConfig::Http(h)) => (h.url.clone(), None),
                Some(TargetConfig::Prometheus(pt)) => {
                    let auth = match (&pt.bearer_token, &pt.basic_auth) {
                        (Some(tok), _) => Some(Auth::Bearer(
                            tok.resolve()
                                .map_err(|e| invalid(format!("bearer_token: {e}")))?,
                        )),
                        (None, Some(b)) => Some(Auth::Basic(
                            b.username.clone(),
                            b.password
                                .resolve()
                                .map_err(|e| invalid(format!("basic_auth: {e}")))?,
                        )),
                        (None, None) => None,
                    };
                    (format!("{}/metrics", pt.url.trim_end_matches('/')), auth)
                }
                _ => {
                    return Err(invalid(format!(
                        "target {t:?} is not an http or prometheus target"
                    )));
                }
            },
            _ => {
                return Err(invalid(
                    "scrape needs exactly one of `url` or `target`".into(),
                ));
            }
        };
        if p.above.is_none() && p.below.is_none() {
            return Err(invalid("scrape needs `above` or `below`".into()));
        }
        let selector = Selector::parse(&p.metric).map_err(|e| invalid(format!("metric: {e}")))?;
        Ok(ScrapeCheck {
            url,
            client: shared_client()?,
            timeout,
            auth,
            selector,
            above: p.above,
            below: p.below,
        })
    }

    /// Fetches the exposition text, or why it could not be read.
    async fn fetch(&self) -> Result<String, String> {
        let mut req = self
            .client
            .get(&self.url)
            .timeout(self.timeout)
            .header("accept", "text/plain;version=0.0.4;q=1.0,*/*;q=0.1");
        req = match &self.auth {
            Some(Auth::Bearer(t)) => req.bearer_auth(t.expose()),
            Some(Auth::Basic(u, p)) => req.basic_auth(u, Some(p.expose())),
            None => req,
        };
        let mut resp = req.send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("status {}", status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("body larger than {} MiB", MAX_BODY >> 20));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|e| {
            format!(
                "body is not UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            )
        })
    }

    /// Tests every sample of `text`: the failing series, or why the text
    /// cannot be judged.
    pub fn judge(&self, text: &str) -> Result<Vec<Series>, String> {
        let mut failing = Vec::new();
        let mut named = self.selector.name.is_none();
        for s in exposition::samples(text) {
            let s = s.map_err(|e| format!("unparsable exposition: {e}"))?;
            if let Some(n) = &self.selector.name
                && n == s.name
            {
                named = true;
            }
            if !self.selector.matches(&s) {
                continue;
            }
            let beyond = match (self.above, self.below) {
                (Some(a), _) if s.value > a => Some(format!("above {a}")),
                (_, Some(b)) if s.value < b => Some(format!("below {b}")),
                _ => None,
            };
            let Some(why) = beyond else { continue };
            let mut labels: Labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if self.selector.name.is_none() {
                labels.insert("__name__".into(), s.name.to_string());
            }
            let shown = labels.clone();
            let mut key = crate::observe::labels_key(&shown);
            if self.selector.name.is_some() {
                key = format!("{}{key}", s.name);
            }
            failing.push(Series {
                labels,
                value: s.value,
                detail: format!("{key} = {} ({why})", s.value),
            });
        }
        if !named {
            // A misspelt metric, or an exporter that stopped exporting it:
            // medic cannot see what it was asked to watch.
            return Err(format!("no sample of {} in the exposition", self.selector));
        }
        Ok(failing)
    }
}

/// The one HTTP client every `scrape` check shares (a clone is a handle;
/// a client per check costs its own TLS roots and connection pool).
fn shared_client() -> Result<reqwest::Client, BuildError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let built = reqwest::Client::builder()
        .build()
        .map_err(|e| BuildError::Invalid(format!("http client: {e}")))?;
    Ok(CLIENT.get_or_init(|| built).clone())
}

/// Why a request failed, with the underlying cause (reqwest's own message
/// stops at "error sending request").
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[async_trait::async_trait]
impl Check for ScrapeCheck {
    async fn run(&self) -> Outcome {
        self.observe().await.outcome()
    }

    async fn observe(&self) -> Observation {
        let text = match self.fetch().await {
            Ok(t) => t,
            Err(why) => {
                return Observation::Whole(Outcome::Unknown(format!("{}: {why}", self.url)));
            }
        };
        match self.judge(&text) {
            Ok(series) => Observation::Series(series),
            Err(why) => Observation::Whole(Outcome::Unknown(format!("{}: {why}", self.url))),
        }
    }

    fn per_series(&self) -> bool {
        true
    }
}

impl super::CheckKind for ScrapeParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, pos};
        match (&self.target, &self.url) {
            (Some(name), None) => {
                v.target(p, "target", name, &["http", "prometheus"], "a scrape check")
            }
            (None, Some(url)) => v.url(p, "url", url),
            (None, None) => v.err(pos(p), "a scrape check needs `target` or `url`"),
            (Some(_), Some(_)) => v.err(
                field_pos(p, "url"),
                "a scrape check takes `target` or `url`, not both",
            ),
        }
        v.non_empty(p, "metric", &self.metric);
        if !self.metric.trim().is_empty()
            && let Err(e) = Selector::parse(&self.metric)
        {
            v.err(field_pos(p, "metric"), format!("metric selector: {e}"));
        }
        if self.above.is_none() && self.below.is_none() {
            v.err(pos(p), "a scrape check needs `above` or `below`");
        }
    }

    fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    fn build(
        &self,
        timeout: Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(ScrapeCheck::build(
            self, timeout, config,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `body` with `status` to every request; returns its URL.
    async fn serve(status: u16, body: String) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/metrics")
    }

    fn check(url: &str, metric: &str, above: Option<f64>, below: Option<f64>) -> ScrapeCheck {
        ScrapeCheck::build(
            &ScrapeParams {
                target: None,
                url: Some(url.into()),
                metric: metric.into(),
                above,
                below,
            },
            Duration::from_secs(5),
            &Config::default(),
        )
        .unwrap()
    }

    const BODY: &str = r#"# HELP queue_depth Jobs waiting.
# TYPE queue_depth gauge
queue_depth{queue="mail",shard="a,b"} 120
queue_depth{queue="sms",shard="c=d"} 3
queue_depth{queue="push \"eu\"",shard="e}f"} 500 1700000000000
job:errors:rate5m{job="api"} 0.2
"#;

    #[tokio::test]
    async fn each_sample_beyond_the_threshold_is_a_failing_series() {
        let url = serve(200, BODY.into()).await;
        let c = check(&url, r#"queue_depth{queue=~".*"}"#, Some(100.0), None);
        assert!(c.per_series());
        let Observation::Series(s) = c.observe().await else {
            panic!("expected series")
        };
        let got: Vec<(String, f64)> = s
            .iter()
            .map(|s| (crate::observe::labels_key(&s.labels), s.value))
            .collect();
        assert_eq!(
            got,
            [
                (r#"{queue="mail",shard="a,b"}"#.to_string(), 120.0),
                (r#"{queue="push \"eu\"",shard="e}f"}"#.to_string(), 500.0),
            ]
        );
        assert_eq!(
            s[0].detail,
            r#"queue_depth{queue="mail",shard="a,b"} = 120 (above 100)"#
        );
        // Folded for `run`.
        assert!(matches!(c.run().await, Outcome::Failing(d) if d.contains("= 500 (above 100)")));
        // Colons in names; below.
        let c = check(&url, "job:errors:rate5m", None, Some(0.5));
        assert!(
            matches!(c.observe().await, Observation::Series(s) if s.len() == 1 && s[0].labels["job"] == "api")
        );
        // Nothing beyond: ok. Labels filter to nothing: ok.
        assert_eq!(
            check(&url, r#"queue_depth{queue!="mail"}"#, Some(1000.0), None)
                .run()
                .await,
            Outcome::Ok
        );
        assert_eq!(
            check(&url, r#"queue_depth{queue="none"}"#, Some(1.0), None)
                .run()
                .await,
            Outcome::Ok
        );
    }

    #[tokio::test]
    async fn what_medic_cannot_see_is_unknown_with_the_reason() {
        let unknown = |o: Outcome, want: &str| match o {
            Outcome::Unknown(d) => assert!(d.contains(want), "{d:?} lacks {want:?}"),
            other => panic!("expected unknown, got {other:?}"),
        };
        let url = serve(200, BODY.into()).await;
        unknown(
            check(&url, "no_such_metric", Some(1.0), None).run().await,
            "no sample of no_such_metric",
        );
        let bad = serve(503, "overloaded".into()).await;
        unknown(check(&bad, "up", Some(1.0), None).run().await, "status 503");
        let garbled = serve(200, "up 1\nup{job=\"x} 2\n".into()).await;
        unknown(
            check(&garbled, "up", Some(1.0), None).run().await,
            "unparsable exposition: line 2:8",
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = format!("http://{}/metrics", l.local_addr().unwrap());
        drop(l);
        unknown(
            check(&gone, "up", Some(1.0), None).run().await,
            "Connection refused",
        );
    }

    #[test]
    fn build_refuses_bad_selectors_and_missing_thresholds() {
        let p = |metric: &str, above| ScrapeParams {
            target: None,
            url: Some("http://127.0.0.1:1/metrics".into()),
            metric: metric.into(),
            above,
            below: None,
        };
        let err = |p| {
            ScrapeCheck::build(&p, Duration::from_secs(1), &Config::default())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(p("up{job=}", Some(1.0))),
            "metric: column 8: expected '\"' to open a label value"
        );
        assert_eq!(err(p("up", None)), "scrape needs `above` or `below`");
    }
}
