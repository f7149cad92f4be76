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

use std::time::Duration;

use regex::Regex;
use tokio::time::Instant;

use super::{BuildError, Check};
use crate::config::{Config, TargetConfig};
use crate::observe::Outcome;

/// A runnable `http` check.
#[derive(Debug)]
pub struct HttpCheck {
    /// Parsed once: parsing (and IDNA) on every request was a few per
    /// cent of medic's CPU at 8,000 http checks per second.
    url: reqwest::Url,
    client: reqwest::Client,
    status: Vec<u16>,
    max_latency: Option<Duration>,
    body: Option<Regex>,
}

impl HttpCheck {
    pub fn build(p: &HttpParams, config: &Config) -> Result<Self, BuildError> {
        let url = match (&p.url, &p.target) {
            (Some(u), None) => u.clone(),
            (None, Some(t)) => match config.targets.get(t) {
                Some(TargetConfig::Http(h)) => h.url.clone(),
                _ => {
                    return Err(BuildError::Invalid(format!(
                        "target {t:?} is not an http target"
                    )));
                }
            },
            _ => {
                return Err(BuildError::Invalid(
                    "http needs exactly one of `url` or `target`".into(),
                ));
            }
        };
        let body = p
            .body
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| BuildError::Invalid(format!("body: {e}")))?;
        let url = reqwest::Url::parse(&url)
            .map_err(|e| BuildError::Invalid(format!("url {url:?}: {e}")))?;
        Ok(HttpCheck {
            url,
            client: shared_client()?,
            status: p.status.clone(),
            max_latency: p.max_latency.map(|d| d.get()),
            body,
        })
    }

    fn status_ok(&self, code: u16) -> bool {
        if self.status.is_empty() {
            (200..300).contains(&code)
        } else {
            self.status.contains(&code)
        }
    }
}

/// The one HTTP client every `http` check shares (a clone is a handle).
/// A client per check cost each its own TLS roots and connection pool:
/// 10,000 checks took 561 MB before, 33 MB after (README, Performance).
fn shared_client() -> Result<reqwest::Client, BuildError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let built = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BuildError::Invalid(format!("http client: {e}")))?;
    Ok(CLIENT.get_or_init(|| built).clone())
}

#[async_trait::async_trait]
impl Check for HttpCheck {
    async fn run(&self) -> Outcome {
        let start = Instant::now();
        let resp = match self.client.get(self.url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return classify(self.url.as_str(), &e),
        };
        let code = resp.status().as_u16();
        if !self.status_ok(code) {
            return Outcome::Failing(format!("{}: status {code}", self.url));
        }
        if let Some(re) = &self.body {
            match resp.text().await {
                Ok(text) if re.is_match(&text) => {}
                Ok(_) => {
                    return Outcome::Failing(format!(
                        "{}: body does not match /{}/",
                        self.url,
                        re.as_str()
                    ));
                }
                Err(e) => return Outcome::Failing(format!("{}: reading body: {e}", self.url)),
            }
        }
        let took = start.elapsed();
        if let Some(max) = self.max_latency
            && took > max
        {
            return Outcome::Failing(format!(
                "{}: answered in {} ms, limit {} ms",
                self.url,
                took.as_millis(),
                max.as_millis()
            ));
        }
        Outcome::Ok
    }

    fn timed_out(&self, after: Duration) -> Outcome {
        super::silent(self.url.as_str(), after)
    }
}

fn classify(url: &str, e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        return Outcome::Unreachable(format!("{url}: timed out"));
    }
    // Walk to the io::Error underneath, if any: refused/reset means broken.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return super::tcp::classify_io(url, io);
        }
        src = s.source();
    }
    Outcome::Unknown(format!("{url}: {e}"))
}

impl super::CheckKind for HttpParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, item_pos, pos};
        match (&self.target, &self.url) {
            (Some(name), None) => v.target(p, "target", name, &["http"], "an http check"),
            (None, Some(url)) => v.url(p, "url", url),
            (None, None) => v.err(pos(p), "an http check needs `target` or `url`"),
            (Some(_), Some(_)) => v.err(
                field_pos(p, "url"),
                "an http check takes `target` or `url`, not both",
            ),
        }
        for (i, code) in self.status.iter().enumerate() {
            if !(100..=599).contains(code) {
                v.err(
                    item_pos(p, "status", i),
                    format!("{code} is not an HTTP status code (100-599)"),
                );
            }
        }
        if let Some(d) = self.max_latency
            && d.get().is_zero()
        {
            v.err(
                field_pos(p, "max_latency"),
                "max_latency must be longer than 0s",
            );
        }
        if let Some(body) = &self.body
            && let Err(e) = Regex::new(body)
        {
            v.err(
                field_pos(p, "body"),
                format!("invalid regular expression: {}", regex_message(&e)),
            );
        }
    }

    fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    fn build(
        &self,
        _timeout: std::time::Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(HttpCheck::build(self, config)?))
    }
}

/// The one-line gist of a regex error (its Display is a multi-line diagram).
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().next().unwrap_or("invalid"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route HTTP server answering every request with `status` and `body` after `delay`.
    async fn serve(status: u16, body: &'static str, delay: Duration) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/health")
    }

    fn check(
        url: &str,
        status: Vec<u16>,
        max_latency: Option<&str>,
        body: Option<&str>,
    ) -> HttpCheck {
        HttpCheck::build(
            &HttpParams {
                target: None,
                url: Some(url.into()),
                status,
                max_latency: max_latency.map(|s| s.parse().unwrap()),
                body: body.map(String::from),
            },
            &Config::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn status_body_and_latency() {
        let ok = serve(200, "status: healthy", Duration::ZERO).await;
        assert_eq!(
            check(&ok, vec![], None, Some("healthy")).run().await,
            Outcome::Ok
        );
        assert_eq!(
            check(&ok, vec![], None, Some("^ready$")).run().await,
            Outcome::Failing(format!("{ok}: body does not match /^ready$/"))
        );
        assert_eq!(
            check(&ok, vec![204], None, None).run().await,
            Outcome::Failing(format!("{ok}: status 200"))
        );
        let bad = serve(503, "", Duration::ZERO).await;
        assert_eq!(
            check(&bad, vec![], None, None).run().await,
            Outcome::Failing(format!("{bad}: status 503"))
        );
        let slow = serve(200, "", Duration::from_millis(300)).await;
        let o = check(&slow, vec![], Some("100ms"), None).run().await;
        assert!(
            matches!(&o, Outcome::Failing(d) if d.contains("limit 100 ms")),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn refused_is_failing() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        drop(l);
        let o = check(&url, vec![], None, None).run().await;
        assert!(
            matches!(&o, Outcome::Failing(d) if d.contains("connection refused")),
            "{o:?}"
        );
    }
}
