//! `route53.failover`'s runtime: the Route 53 client, the change, its
//! polling and the read-back (the `aws` feature).

use std::time::Duration;

use aws_sdk_route53::Client;
use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::config::{BehaviorVersion, Region};
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use serde_json::json;
use tokio::sync::OnceCell;

use super::{DEFAULT_WITHIN, FailoverParams, Pacing};
use crate::config::{Config, Route53Target, TargetConfig};
use crate::duration::Dur;
use crate::remedy::{Action, ActionContext, ActionResult, BuildError, Gate, Preflight};

/// A runnable `route53.failover`.
pub struct Failover {
    name: String,
    target: Route53Target,
    within: Dur,
    pacing: Pacing,
    client: OnceCell<Client>,
}

/// What a record holds.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    ttl: Option<i64>,
    values: Vec<String>,
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Errors worth retrying after a pause.
fn retryable(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("Throttling" | "ThrottlingException" | "PriorRequestNotComplete")
    )
}

fn shown<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => aws_sdk_route53::error::DisplayErrorContext(e).to_string(),
    }
}

impl Failover {
    pub fn build(p: &FailoverParams, config: &Config) -> Result<Self, BuildError> {
        let Some(TargetConfig::Route53(t)) = config.targets.get(&p.target) else {
            return Err(BuildError::Invalid(format!(
                "target {:?} is not a route53 target",
                p.target
            )));
        };
        Ok(Failover {
            name: p.target.clone(),
            target: t.clone(),
            within: p.within.unwrap_or(DEFAULT_WITHIN),
            pacing: Pacing::default(),
            client: OnceCell::new(),
        })
    }

    /// With other poll and backoff intervals (tests).
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    async fn client(&self) -> Result<&Client, String> {
        self.client
            .get_or_try_init(|| async {
                let t = &self.target;
                let mut b = match &t.credentials {
                    Some(c) => aws_sdk_route53::Config::builder()
                        .behavior_version(BehaviorVersion::latest())
                        .credentials_provider(c.resolve()?),
                    None => {
                        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
                        aws_sdk_route53::config::Builder::from(&shared)
                    }
                };
                b = b
                    .region(Region::new(t.region.clone()))
                    // medic retries (and backs off) itself, within its deadline.
                    .retry_config(RetryConfig::disabled());
                if let Some(url) = &t.endpoint_url {
                    b = b.endpoint_url(url);
                }
                Ok(Client::from_conf(b.build()))
            })
            .await
    }

    fn record_type(&self) -> RrType {
        RrType::from(self.target.record_type.as_str())
    }

    fn same_name(&self, name: &str) -> bool {
        name.trim_end_matches('.') == self.target.record.trim_end_matches('.')
    }

    /// Reads the record (ListResourceRecordSets from its name and type).
    async fn read(&self, client: &Client) -> Result<Option<Record>, String> {
        let mut backoff = self.pacing.first_backoff;
        loop {
            let r = client
                .list_resource_record_sets()
                .hosted_zone_id(&self.target.hosted_zone_id)
                .start_record_name(&self.target.record)
                .start_record_type(self.record_type())
                .max_items(1)
                .send()
                .await;
            match r {
                Ok(out) => {
                    return Ok(out
                        .resource_record_sets()
                        .iter()
                        .find(|s| self.same_name(s.name()) && *s.r#type() == self.record_type())
                        .map(|s| Record {
                            ttl: s.ttl(),
                            values: sorted(
                                s.resource_records()
                                    .iter()
                                    .map(|r| r.value().to_string())
                                    .collect(),
                            ),
                        }));
                }
                Err(e) if retryable(e.code()) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.pacing.max_backoff);
                }
                Err(e) => return Err(format!("ListResourceRecordSets: {}", shown(&e))),
            }
        }
    }

    fn secondary(&self) -> Vec<String> {
        sorted(self.target.secondary.clone())
    }

    /// UPSERT, poll until INSYNC, read back. Returns (detail, data).
    async fn fail_over(&self, ctx: &ActionContext) -> Result<ActionResult, String> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.within.get();
        let client = self.client().await?;
        let mut set = ResourceRecordSet::builder()
            .name(&self.target.record)
            .r#type(self.record_type())
            .ttl(i64::from(self.target.ttl));
        for v in &self.target.secondary {
            set = set.resource_records(
                ResourceRecord::builder()
                    .value(v)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        let change = Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(set.build().map_err(|e| e.to_string())?)
            .build()
            .map_err(|e| e.to_string())?;
        let batch = ChangeBatch::builder()
            .comment(format!("medic failover, attempt {}", ctx.key))
            .changes(change)
            .build()
            .map_err(|e| e.to_string())?;
        let mut retries = 0u32;
        let mut backoff = self.pacing.first_backoff;
        let info = loop {
            let r = client
                .change_resource_record_sets()
                .hosted_zone_id(&self.target.hosted_zone_id)
                .change_batch(batch.clone())
                .send()
                .await;
            match r {
                Ok(out) => match out.change_info() {
                    Some(i) => break i.clone(),
                    None => {
                        return Err("ChangeResourceRecordSets answered without ChangeInfo".into());
                    }
                },
                Err(e) if retryable(e.code()) => {
                    retries += 1;
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(format!(
                            "ChangeResourceRecordSets: {} (gave up after {retries} tries within {})",
                            shown(&e),
                            self.within
                        ));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.pacing.max_backoff);
                }
                Err(e) => return Err(format!("ChangeResourceRecordSets: {}", shown(&e))),
            }
        };
        let change_id = info.id().trim_start_matches("/change/").to_string();
        let mut status = info.status().clone();
        let mut polls = 0u32;
        let mut wait = self.pacing.first_poll;
        while status != ChangeStatus::Insync {
            if tokio::time::Instant::now() + wait > deadline {
                return Ok(ActionResult::failed(
                    format!(
                        "change {change_id} still {} after {} ({polls} polls)",
                        status.as_str(),
                        self.within
                    ),
                    json!({ "change_id": change_id, "polls": polls, "retries": retries, "timed_out": true }),
                ));
            }
            tokio::time::sleep(wait).await;
            polls += 1;
            match client.get_change().id(&change_id).send().await {
                Ok(out) => {
                    if let Some(i) = out.change_info() {
                        status = i.status().clone();
                    }
                    wait = (wait * 2).min(self.pacing.max_poll);
                }
                Err(e) if retryable(e.code()) => {
                    retries += 1;
                    wait = (wait * 2).min(self.pacing.max_backoff);
                }
                Err(e) => return Err(format!("GetChange {change_id}: {}", shown(&e))),
            }
        }
        let after = self.read(client).await?;
        let data = json!({
            "change_id": change_id,
            "polls": polls,
            "retries": retries,
            "took_ms": started.elapsed().as_millis() as u64,
            "record": after.as_ref().map(|r| json!({ "ttl": r.ttl, "values": r.values })),
        });
        match after {
            Some(r) if r.values == self.secondary() => Ok(ActionResult::ok(
                format!(
                    "{} {} now {} (change {change_id} INSYNC after {polls} polls, {retries} retries)",
                    self.target.record,
                    self.target.record_type,
                    r.values.join(", ")
                ),
                data,
            )),
            Some(r) => Ok(ActionResult::failed(
                format!(
                    "INSYNC, but {} reads back {} instead of {}",
                    self.target.record,
                    r.values.join(", "),
                    self.secondary().join(", ")
                ),
                data,
            )),
            None => Ok(ActionResult::failed(
                format!("INSYNC, but {} cannot be read back", self.target.record),
                data,
            )),
        }
    }
}

#[async_trait::async_trait]
impl Action for Failover {
    fn describe(&self) -> String {
        format!(
            "route53.failover of {} {} to {}",
            self.target.record,
            self.target.record_type,
            self.target.secondary.join(", ")
        )
    }

    fn inputs(&self) -> serde_json::Value {
        json!({
            "target": self.name,
            "hosted_zone_id": self.target.hosted_zone_id,
            "record": self.target.record,
            "type": self.target.record_type,
            "primary": self.target.primary,
            "secondary": self.target.secondary,
            "ttl": self.target.ttl,
            "within": self.within.to_string(),
        })
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                pre.gate(Gate::fail("record-exists", e));
                return pre;
            }
        };
        let record = match self.read(client).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                pre.gate(Gate::fail(
                    "record-exists",
                    format!(
                        "no {} record {} in zone {}",
                        self.target.record_type, self.target.record, self.target.hosted_zone_id
                    ),
                ));
                return pre;
            }
            Err(e) => {
                pre.gate(Gate::fail("record-exists", e));
                return pre;
            }
        };
        pre.data = json!({ "ttl": record.ttl, "values": record.values });
        pre.gate(Gate::pass(
            "record-exists",
            format!(
                "{} {} = {}",
                self.target.record,
                self.target.record_type,
                record.values.join(", ")
            ),
        ));
        let max = i64::from(self.target.max_ttl);
        match record.ttl {
            Some(ttl) if ttl > max => {
                pre.gate(Gate::fail(
                    "ttl",
                    format!("TTL {ttl}s is above max_ttl {max}s: resolvers would keep the old address; lower it or raise max_ttl"),
                ));
                return pre;
            }
            ttl => pre.gate(Gate::pass(
                "ttl",
                format!("TTL {}s (max {max}s)", ttl.unwrap_or(0)),
            )),
        };
        if record.values == self.secondary() {
            pre.data["already"] = json!(true);
            pre.gate(Gate::pass("target", "already points at the secondary"));
        } else {
            pre.gate(Gate::pass(
                "target",
                format!(
                    "{} → {}",
                    record.values.join(", "),
                    self.secondary().join(", ")
                ),
            ));
        }
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        if ctx.preflight["already"] == json!(true) {
            return ActionResult::ok(
                format!(
                    "{} already points at the secondary; nothing changed",
                    self.target.record
                ),
                json!({ "already": true }),
            );
        }
        let deadline = self.within.get() + Duration::from_secs(5);
        tokio::select! {
            r = tokio::time::timeout(deadline, self.fail_over(ctx)) => match r {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => ActionResult::failed(e, json!({})),
                Err(_) => ActionResult::failed(
                    format!("no answer within {}", humantime::format_duration(deadline)),
                    json!({ "timed_out": true }),
                ),
            },
            _ = ctx.cancel.cancelled() => ActionResult::failed("aborted: medic is stopping", json!({})),
        }
    }

    async fn reconcile(&self, _ctx: &ActionContext) -> Option<ActionResult> {
        let client = self.client().await.ok()?;
        match self.read(client).await {
            Ok(Some(r)) if r.values == self.secondary() => Some(ActionResult::ok(
                format!("{} points at the secondary", self.target.record),
                json!({}),
            )),
            Ok(_) => Some(ActionResult::failed(
                format!("{} does not point at the secondary", self.target.record),
                json!({}),
            )),
            Err(_) => None,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_and_prior_request_are_retried() {
        assert!(retryable(Some("Throttling")));
        assert!(retryable(Some("PriorRequestNotComplete")));
        assert!(!retryable(Some("InvalidChangeBatch")));
        assert!(!retryable(None));
    }
}
