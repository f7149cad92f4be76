//! `alert`: alerts pushed by Prometheus Alertmanager to medic's webhook.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `check: { alert: { matchers: { alertname: RedisDown } } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertParams {
    /// Label equality matchers; a firing alert matching all is failing.
    pub matchers: BTreeMap<String, String>,
}

use std::sync::{Arc, OnceLock};

use super::{BuildError, Check};
use crate::config::Config;
use crate::observe::{Labels, Observation, Outcome, Series};
use crate::store::prelude::*;

/// A runnable `alert` check: per series, each firing alert matching every
/// matcher is a failing instance keyed by the alert's labels. It reads the
/// store (where the webhook receiver records what Alertmanager pushes), so
/// firing alerts survive restarts and every replica sharing a PostgreSQL
/// store sees the same alerts.
pub struct AlertCheck {
    matchers: BTreeMap<String, String>,
    store: OnceLock<Arc<dyn Store>>,
}

impl AlertCheck {
    /// Alertmanager can only push to medic's HTTP server: without
    /// `http.listen` this check would never see an alert.
    pub fn build(p: &AlertParams, config: &Config) -> Result<Self, BuildError> {
        if config.http.is_none() {
            return Err(BuildError::Invalid(
                "alert checks need medic's HTTP server (`http.listen` in the config): Alertmanager pushes alerts to it".into(),
            ));
        }
        if p.matchers.is_empty() {
            return Err(BuildError::Invalid(
                "an alert check needs at least one matcher".into(),
            ));
        }
        Ok(Self::new(p.matchers.clone()))
    }

    /// A check over `matchers`, before a store is attached.
    pub fn new(matchers: BTreeMap<String, String>) -> Self {
        AlertCheck {
            matchers,
            store: OnceLock::new(),
        }
    }
}

#[async_trait::async_trait]
impl Check for AlertCheck {
    async fn run(&self) -> Outcome {
        self.observe().await.outcome()
    }

    async fn observe(&self) -> Observation {
        let Some(store) = self.store.get() else {
            return Observation::Whole(Outcome::Unknown(
                "no store attached: alerts cannot be read".into(),
            ));
        };
        // Indexed: only the alerts the matchers select are read.
        let firing = match store.firing_alerts_matching(&self.matchers).await {
            Ok(f) => f,
            Err(e) => {
                return Observation::Whole(Outcome::Unknown(format!("reading alerts: {e}")));
            }
        };
        let mut seen = std::collections::HashSet::new();
        let series = firing
            .into_iter()
            // Oldest first: a second firing row of one alert (its resolved
            // notification was lost) is the same instance.
            .filter(|a| seen.insert(a.fingerprint.clone()))
            .map(|a| {
                let name = a.labels.get("alertname").map_or("alert", String::as_str);
                let summary = a
                    .annotations
                    .get("summary")
                    .or_else(|| a.annotations.get("description"))
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                Series {
                    detail: format!(
                        "{name}{} firing since {}{summary}",
                        crate::observe::labels_key(&a.labels),
                        a.starts_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    labels: a.labels.into_iter().collect::<Labels>(),
                    value: 1.0,
                }
            })
            .collect();
        Observation::Series(series)
    }

    fn per_series(&self) -> bool {
        true
    }

    fn attach_store(&self, store: &Arc<dyn Store>) {
        let _ = self.store.set(store.clone());
    }
}

impl super::CheckKind for AlertParams {
    /// `{alert: NAME}` is `{alert: {matchers: {alertname: NAME}}}`.
    fn shorthand(scalar: &marked_yaml::Node) -> Option<marked_yaml::Node> {
        let matchers = crate::yaml::wrap("alertname", scalar.clone());
        Some(crate::yaml::wrap("matchers", matchers))
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, pos};
        if self.matchers.is_empty() {
            v.err(
                field_pos(p, "matchers"),
                "an alert check needs at least one matcher",
            );
        }
        if let Some(cfg) = v.config
            && cfg.http.is_none()
        {
            v.err(
                pos(p),
                "an alert check needs medic's HTTP server (`http.listen` in the config): Alertmanager pushes alerts to it",
            );
        }
    }

    fn build(
        &self,
        _timeout: std::time::Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(AlertCheck::build(self, config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AlertRecord, AlertStatus, MemoryStore};

    fn record(labels: &[(&str, &str)], status: AlertStatus, starts: i64) -> AlertRecord {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AlertRecord {
            fingerprint: crate::observe::fingerprint(&labels),
            starts_at: chrono::DateTime::from_timestamp(starts, 0).unwrap(),
            status,
            labels,
            annotations: [("summary".to_string(), "down".to_string())].into(),
            ends_at: None,
            generator_url: String::new(),
            received_at: chrono::DateTime::from_timestamp(starts, 0).unwrap(),
        }
    }

    #[tokio::test]
    async fn each_matching_firing_alert_is_a_failing_series() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let check = AlertCheck::new([("alertname".to_string(), "RedisDown".to_string())].into());
        assert!(matches!(
            check.observe().await,
            Observation::Whole(Outcome::Unknown(_))
        ));
        check.attach_store(&store);
        assert!(check.per_series());
        assert_eq!(
            check.observe().await,
            Observation::Series(vec![]),
            "absent is ok"
        );
        let a = [("alertname", "RedisDown"), ("instance", "cache-a")];
        let b = [("alertname", "RedisDown"), ("instance", "cache-b")];
        store
            .record_alerts(&[
                record(&a, AlertStatus::Firing, 100),
                record(&b, AlertStatus::Firing, 200),
                record(&[("alertname", "Other")], AlertStatus::Firing, 100),
                // Its resolution was lost; it fired again: one instance.
                record(&a, AlertStatus::Firing, 300),
            ])
            .await
            .unwrap();
        let Observation::Series(s) = check.observe().await else {
            panic!()
        };
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["instance"], "cache-a");
        assert_eq!(
            s[0].detail,
            "RedisDown{alertname=\"RedisDown\",instance=\"cache-a\"} firing since 1970-01-01T00:01:40Z: down"
        );
        store
            .record_alerts(&[
                // A resolution ends exactly its firing: both are needed.
                record(&a, AlertStatus::Resolved, 100),
                record(&a, AlertStatus::Resolved, 300),
                record(&b, AlertStatus::Resolved, 200),
            ])
            .await
            .unwrap();
        assert_eq!(check.run().await, Outcome::Ok, "resolved is ok");
    }

    #[test]
    fn build_needs_the_http_server() {
        let p = AlertParams {
            matchers: [("alertname".to_string(), "X".to_string())].into(),
        };
        let err = AlertCheck::build(&p, &Config::default()).err().unwrap();
        assert!(err.to_string().contains("http.listen"), "{err}");
    }
}
