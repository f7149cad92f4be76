//! The Slack notifier: one Block Kit message per incident and channel,
//! updated in place (`chat.update`) on every change, with the timeline in
//! its thread and the buttons Acknowledge, Approve / Reject (with a confirm
//! dialog, while a step awaits approval), Escalate now and Resolve.
//!
//! Plain `reqwest` against the Web API (docs/design.md says why not
//! slack-morphism). The incident message carries Slack message metadata
//! (`medic_incident`, the incident id) and every thread reply the outbox
//! key (`medic_notice`): after a crash that may have hidden a post's reply,
//! medic looks the message up (`conversations.history` /
//! `conversations.replies`) before posting again, so nothing is posted
//! twice. HTTP 429 (and `ratelimited`) is retried after Retry-After.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::{Delivered, Notice, Notifier, NotifyError, Report, View, checked, http_client, human};
use crate::config::SlackNotifier as Config;
use crate::secret::Secret;
use crate::store::IncidentState;

/// Metadata event type of incident messages.
const INCIDENT_EVENT: &str = "medic_incident";
/// Metadata event type of thread replies.
const NOTICE_EVENT: &str = "medic_notice";
/// The metadata event type of reports (drills), which no incident owns.
const REPORT_EVENT: &str = "medic_report";

/// The Content-Type of every Web API call with a body.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Posts to one channel.
pub struct SlackNotifier {
    name: String,
    channel: String,
    mention: Vec<String>,
    api: String,
    token: Result<Secret, String>,
    client: reqwest::Client,
    /// Messages posted by this process whose ts may not be stored yet.
    posted: Mutex<HashMap<i64, String>>,
}

/// Slack's `<@U1>` / `<!subteam^S1>` for a user or group id.
fn mention(id: &str) -> String {
    if id.starts_with('S') {
        format!("<!subteam^{id}>")
    } else {
        format!("<@{id}>")
    }
}

/// Text as Slack shows it literally: `&`, `<` and `>` are the three
/// characters Slack's `mrkdwn` (and a message's `text`) reads as markup
/// (`<!channel>`, `<@U1>`, `<https://x|label>`), so everything that is not
/// medic's own markup (labels, annotations, check output, timeline
/// messages, names) goes through here.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// [`escape`] after [`cut`]: the cut never splits an entity.
fn esc_cut(text: &str, n: usize) -> String {
    escape(&cut(text, n))
}

/// A decision's words (`acknowledged by <@U1> at 10:02 UTC`): escaped,
/// but a mention of a Slack user right after `by ` stays a mention: medic
/// wrote it from a verified click (`<@` + the user ID Slack signed).
pub fn escape_decision(text: &str) -> String {
    const OPEN: &str = "by &lt;@";
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped.as_str();
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len()..];
        let id_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit()))
            .unwrap_or(after.len());
        if id_len > 0 && after[id_len..].starts_with("&gt;") {
            out.push_str("by <@");
            out.push_str(&after[..id_len]);
            out.push('>');
            rest = &after[id_len + "&gt;".len()..];
        } else {
            out.push_str(OPEN);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn plain(text: &str) -> Value {
    json!({ "type": "plain_text", "text": text, "emoji": true })
}

fn mrkdwn(text: &str) -> Value {
    json!({ "type": "mrkdwn", "text": text })
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// The action id of the *Post status update* button.
pub const STATUS_UPDATE: &str = "status_update";
/// The `callback_id` of the status update modal.
pub const STATUS_MODAL: &str = "medic_status_update";

/// The modal of *Post status update* (`views.open`): a status and the
/// words the public status page shows for incident `id` (which affects
/// `components`). `private_metadata` is `ID:CHANNEL`, so the submission
/// names the incident and where to answer.
pub fn status_update_modal(id: i64, channel: &str, components: &[String]) -> Value {
    let option = |v: &str, label: &str| json!({ "text": plain(label), "value": v });
    let options = vec![
        option("investigating", "Investigating"),
        option("identified", "Identified"),
        option("monitoring", "Monitoring"),
    ];
    json!({
        "type": "modal",
        "callback_id": STATUS_MODAL,
        "private_metadata": format!("{id}:{channel}"),
        "title": plain("Public status update"),
        "submit": plain("Post"),
        "close": plain("Cancel"),
        "blocks": [
            { "type": "section", "text": mrkdwn(&format!(
                "The public status page shows this, as written, for incident #{id} ({}). Write for users: no hosts, no internals.",
                esc_cut(&components.join(", "), 500)
            )) },
            { "type": "input", "block_id": "status", "label": plain("Status"),
              "element": { "type": "static_select", "action_id": "status",
                           "initial_option": options[0].clone(), "options": options } },
            { "type": "input", "block_id": "body", "label": plain("Update"),
              "element": { "type": "plain_text_input", "action_id": "body", "multiline": true,
                           "max_length": super::public::MAX_BODY } },
        ],
    })
}

/// The RTO clock: how much of the objective is used (or by how much it
/// was missed).
fn rto_clock(v: &View) -> String {
    let end = v.incident.resolved_at.unwrap_or(v.now);
    let took = (end - v.incident.opened_at).to_std().unwrap_or_default();
    match v.rto {
        None => format!("{} since detection", human(took)),
        Some(rto) if took <= rto => format!("{} of {} used", human(took), human(rto)),
        Some(rto) => format!("RTO {} MISSED by {}", human(rto), human(took - rto)),
    }
}

/// The incident message: blocks and the notification fallback text.
pub fn render(v: &View) -> (Vec<Value>, String) {
    let inc = &v.incident;
    let icon = match inc.state {
        IncidentState::Resolved => "✅",
        IncidentState::Acknowledged => "👀",
        _ if inc.severity == "critical" => "🔴",
        _ => "🟠",
    };
    let title = cut(&format!("{icon} {}", inc.summary), 150);
    let lines = |v: &[String]| {
        if v.is_empty() {
            "—".to_string()
        } else {
            v.iter()
                .map(|l| format!("• {}", esc_cut(l, 280)))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let mut blocks = vec![
        json!({ "type": "header", "text": plain(&title) }),
        json!({ "type": "section", "fields": [
            mrkdwn(&format!("*Severity*\n{}", escape(&inc.severity))),
            mrkdwn(&format!("*Scenario*\n{}", escape(&inc.scenario))),
            mrkdwn(&format!("*Target*\n{}", if v.targets.is_empty() { "—".into() } else { esc_cut(&v.targets.join(", "), 1000) })),
            mrkdwn(&format!("*State*\n{}", inc.state.as_str())),
            mrkdwn(&format!("*RTO clock*\n{}", rto_clock(v))),
            mrkdwn(&format!("*Incident*\n#{} opened {}", inc.id, inc.opened_at.format("%Y-%m-%d %H:%M UTC"))),
        ]}),
        json!({ "type": "section", "text": mrkdwn(&format!("*Observed*\n{}", lines(&v.observed))) }),
        json!({ "type": "section", "text": mrkdwn(&format!("*Done*\n{}", lines(&v.done))) }),
    ];
    if !v.dependents.is_empty() {
        // The root cause's page lists what waits on it, once.
        blocks.push(json!({ "type": "section", "text": mrkdwn(&format!("*Dependents (waiting on this incident)*\n{}", lines(&v.dependents))) }));
    }
    if let Some(next) = &v.next {
        blocks
            .push(json!({ "type": "section", "text": mrkdwn(&format!("*About to do*\n{}", esc_cut(next, 1000))) }));
    }
    if !v.decisions.is_empty() {
        let who = v
            .decisions
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(|d| escape_decision(&cut(d, 390)))
            .collect::<Vec<_>>()
            .join(" · ");
        blocks.push(json!({ "type": "context", "elements": [mrkdwn(&who)] }));
    }
    if inc.state == IncidentState::Resolved {
        checklist_blocks(v, &mut blocks);
    }
    if inc.state != IncidentState::Resolved {
        let id = inc.id.to_string();
        let mut buttons = Vec::new();
        // One `primary` button per block (Slack's guideline): Approve
        // while a step waits, Acknowledge otherwise.
        if inc.state != IncidentState::Acknowledged {
            let mut ack = json!({ "type": "button", "action_id": "acknowledge", "value": id, "text": plain("Acknowledge") });
            if v.awaiting.is_none() {
                ack["style"] = json!("primary");
            }
            buttons.push(ack);
        }
        if let Some(step) = &v.awaiting {
            let value = format!("{id}:{step}");
            let confirm = |verb: &str| {
                json!({
                    "title": plain(&format!("{verb} step {}?", cut(step, 60))),
                    "text": mrkdwn(&format!("medic will {} *{}* on incident #{id} ({}).", if verb == "Approve" { "run" } else { "not run" }, esc_cut(step, 200), escape(&inc.scenario))),
                    "confirm": plain(verb),
                    "deny": plain("Cancel"),
                })
            };
            buttons.push(json!({ "type": "button", "action_id": "approve", "value": value, "text": plain(&format!("Approve {}", cut(step, 30))), "style": "primary", "confirm": confirm("Approve") }));
            buttons.push(json!({ "type": "button", "action_id": "reject", "value": value, "text": plain("Reject"), "style": "danger", "confirm": confirm("Reject") }));
        }
        buttons.push(json!({ "type": "button", "action_id": "escalate", "value": id, "text": plain("Escalate now") }));
        if v.public {
            // Opens [`status_update_modal`]: on-call writes what the
            // public status page says.
            buttons.push(json!({ "type": "button", "action_id": STATUS_UPDATE, "value": id, "text": plain("Post status update") }));
        }
        buttons.push(json!({ "type": "button", "action_id": "resolve", "value": id, "text": plain("Resolve") }));
        blocks.push(
            json!({ "type": "actions", "block_id": format!("medic:{id}"), "elements": buttons }),
        );
    }
    let text = escape(&format!(
        "[{}] {} — {} (incident #{})",
        inc.severity,
        cut(&inc.summary, 1000),
        inc.state.as_str(),
        inc.id
    ));
    (blocks, text)
}

/// The post-recovery checklist of a resolved incident: per section, its
/// items (ticked ones with who ticked them) and a button per item still
/// open (`tick:ID`, value `INCIDENT:ID`; anyone may tick).
fn checklist_blocks(v: &View, blocks: &mut Vec<Value>) {
    let id = v.incident.id;
    blocks.push(json!({ "type": "header", "text": plain("Post-recovery checklist") }));
    for section in super::checklist::sections() {
        let items: Vec<&super::checklist::State> = v
            .checklist
            .iter()
            .filter(|s| s.section == section)
            .collect();
        let lines = items
            .iter()
            .map(|s| match (&s.by, s.done) {
                (Some(by), true) => format!(
                    "☑ {} {} — {}",
                    s.id,
                    s.text,
                    escape_decision(&format!("by {by}"))
                ),
                _ => format!("☐ {} {}", s.id, s.text),
            })
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(json!({ "type": "section", "text": mrkdwn(&format!("*{section}*\n{lines}")) }));
        let buttons: Vec<Value> = items
            .iter()
            .filter(|s| !s.done)
            .map(|s| {
                json!({
                    "type": "button",
                    "action_id": format!("tick:{}", s.id),
                    "value": format!("{id}:{}", s.id),
                    "text": plain(&cut(&format!("Tick {} {}", s.id, s.text), 75)),
                })
            })
            .collect();
        if !buttons.is_empty() {
            blocks.push(json!({ "type": "actions", "block_id": format!("medic:{id}:checklist:{section}"), "elements": buttons }));
        }
    }
}

impl SlackNotifier {
    pub fn new(name: &str, c: &Config) -> Self {
        SlackNotifier {
            name: name.to_string(),
            channel: c.channel.clone(),
            mention: c.mention.clone(),
            api: c.api_url.trim_end_matches('/').to_string(),
            token: c.token.resolve().map_err(|e| e.to_string()),
            client: http_client(),
            posted: Mutex::new(HashMap::new()),
        }
    }

    fn token(&self) -> Result<&str, NotifyError> {
        self.token
            .as_ref()
            .map(|t| t.expose())
            .map_err(|e| NotifyError::Permanent(format!("{}: token: {e}", self.name)))
    }

    /// One Web API call; Slack's `ok: false` errors sorted into retry or not.
    async fn call(
        &self,
        method: &str,
        body: Option<&Value>,
        query: &[(&str, String)],
    ) -> Result<Value, NotifyError> {
        let url = format!("{}/{method}", self.api);
        let req = match body {
            // Slack asks for the charset (it warns `missing_charset`
            // otherwise); reqwest's `.json()` leaves it out.
            Some(b) => self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, JSON_UTF8)
                .body(serde_json::to_vec(b).unwrap_or_default()),
            None => {
                let q = serde_urlencoded::to_string(query).unwrap_or_default();
                self.client.get(format!("{url}?{q}"))
            }
        };
        let r = req.bearer_auth(self.token()?).send().await;
        let resp = checked(&format!("Slack {method}"), r).await?;
        let v: Value = resp.json().await.map_err(|e| NotifyError::Retry {
            reason: format!("Slack {method}: bad answer: {}", super::request_error(e)),
            after: None,
        })?;
        if v["ok"] == true {
            return Ok(v);
        }
        let err = v["error"].as_str().unwrap_or("unknown error").to_string();
        let reason = format!("Slack {method}: {err}");
        match err.as_str() {
            "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout" => Err(NotifyError::Retry {
                reason,
                after: None,
            }),
            _ => Err(NotifyError::Permanent(reason)),
        }
    }

    /// The incident message posted before a crash hid its reply, if any.
    async fn find_message(&self, n: &Notice) -> Result<Option<String>, NotifyError> {
        let oldest = n.view.incident.opened_at.timestamp() - 1;
        let v = self
            .call(
                "conversations.history",
                None,
                &[
                    ("channel", self.channel.clone()),
                    ("oldest", oldest.to_string()),
                    ("include_all_metadata", "true".into()),
                    ("limit", "200".into()),
                ],
            )
            .await?;
        let id = n.view.incident.id;
        Ok(v["messages"].as_array().and_then(|ms| {
            ms.iter()
                .find(|m| {
                    m["metadata"]["event_type"] == INCIDENT_EVENT
                        && m["metadata"]["event_payload"]["incident"] == id
                })
                .and_then(|m| m["ts"].as_str().map(String::from))
        }))
    }

    /// Whether this notice's thread reply is already there (after a crash).
    async fn replied(&self, ts: &str, key: &str) -> Result<bool, NotifyError> {
        let v = self
            .call(
                "conversations.replies",
                None,
                &[
                    ("channel", self.channel.clone()),
                    ("ts", ts.to_string()),
                    ("include_all_metadata", "true".into()),
                    ("limit", "200".into()),
                ],
            )
            .await?;
        Ok(v["messages"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["metadata"]["event_type"] == NOTICE_EVENT
                    && m["metadata"]["event_payload"]["key"] == key
            })
        }))
    }

    /// What goes to the thread for a notice.
    /// Everything but the configured mentions is escaped ([`escape`]).
    fn thread_text(&self, n: &Notice) -> String {
        let mut out = n.text.clone();
        for e in n.entries.iter().take(40) {
            out.push_str(&format!(
                "\n• {} {}: {}",
                e.at.format("%H:%M:%S"),
                e.kind,
                cut(&e.message, 300)
            ));
        }
        let more = n.entries.len().saturating_sub(40) + n.more;
        if more > 0 {
            out.push_str(&format!("\n… and {more} more"));
        }
        let out = esc_cut(&out, 3500);
        let mut who: Vec<String> = Vec::new();
        let mine = self.mention.iter().filter(|_| n.mention);
        for m in n.ping.iter().chain(mine).map(|m| mention(m)) {
            if !who.contains(&m) {
                who.push(m);
            }
        }
        if !who.is_empty() {
            return format!("{} {out}", who.join(" "));
        }
        out
    }

    /// Members of a user group (`usergroups.users.list`).
    pub async fn group_members(&self, group: &str) -> Result<Vec<String>, NotifyError> {
        let v = self
            .call(
                "usergroups.users.list",
                None,
                &[("usergroup", group.to_string())],
            )
            .await?;
        Ok(v["users"]
            .as_array()
            .map(|us| {
                us.iter()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Opens a modal for the user whose click carried `trigger_id`
    /// (valid for 3 s: the click is answered first, then this runs).
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), NotifyError> {
        self.call(
            "views.open",
            Some(&json!({ "trigger_id": trigger_id, "view": view })),
            &[],
        )
        .await
        .map(|_| ())
    }

    /// A message only `user` sees (refusals, "already done by"). `text` is
    /// medic's markup: escape what it carries from elsewhere ([`escape`]).
    pub async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), NotifyError> {
        self.call(
            "chat.postEphemeral",
            Some(&json!({ "channel": channel, "user": user, "text": text })),
            &[],
        )
        .await
        .map(|_| ())
    }
}

#[async_trait::async_trait]
impl Notifier for SlackNotifier {
    async fn send(&self, n: &Notice) -> Result<Delivered, NotifyError> {
        let id = n.view.incident.id;
        let (blocks, text) = render(&n.view);
        let known = n
            .reference
            .as_ref()
            .and_then(|r| r["ts"].as_str().map(String::from))
            .or_else(|| super::lock(&self.posted).get(&id).cloned());
        let found = match (&known, n.maybe_sent) {
            (None, true) => self.find_message(n).await?,
            _ => None,
        };
        let (ts, fresh) = match known.or(found) {
            Some(ts) => (ts, false),
            None => {
                let v = self
                    .call(
                        "chat.postMessage",
                        Some(&json!({
                            "channel": self.channel,
                            "text": text,
                            "blocks": blocks,
                            "metadata": { "event_type": INCIDENT_EVENT, "event_payload": { "incident": id } },
                        })),
                        &[],
                    )
                    .await?;
                let ts = v["ts"].as_str().unwrap_or_default().to_string();
                super::lock(&self.posted).insert(id, ts.clone());
                (ts, true)
            }
        };
        if !fresh {
            self.call(
                "chat.update",
                Some(&json!({ "channel": self.channel, "ts": ts, "text": text, "blocks": blocks })),
                &[],
            )
            .await?;
        }
        let already = n.maybe_sent && !fresh && self.replied(&ts, &n.key).await?;
        if !already {
            self.call(
                "chat.postMessage",
                Some(&json!({
                    "channel": self.channel,
                    "thread_ts": ts,
                    "text": self.thread_text(n),
                    "metadata": { "event_type": NOTICE_EVENT, "event_payload": { "key": n.key } },
                })),
                &[],
            )
            .await?;
        }
        Ok(Delivered {
            reference: Some(json!({ "channel": self.channel, "ts": ts })),
            detail: format!("message {ts}"),
        })
    }

    /// A report: a message of its own in the channel (its title, then the
    /// text as a preformatted block, escaped), tied to no incident's
    /// message.
    async fn report(&self, r: &Report) -> Result<Delivered, NotifyError> {
        let v = self
            .call(
                "chat.postMessage",
                Some(&report_message(&self.channel, r)),
                &[],
            )
            .await?;
        let ts = v["ts"].as_str().unwrap_or_default().to_string();
        Ok(Delivered {
            reference: Some(json!({ "channel": self.channel, "ts": ts })),
            detail: format!("message {ts}"),
        })
    }
}

/// A report's `chat.postMessage` body: the title as a header, the text
/// preformatted and escaped (a drill's timeline quotes check output and
/// labels), the metadata naming no incident.
fn report_message(channel: &str, r: &Report) -> Value {
    json!({
        "channel": channel,
        "text": esc_cut(&r.title, 300),
        "blocks": [
            { "type": "header", "text": plain(&cut(&r.title, 150)) },
            { "type": "section", "text": mrkdwn(&format!("```{}```", esc_cut(&r.text, 2900))) },
        ],
        "metadata": { "event_type": REPORT_EVENT, "event_payload": { "key": r.key, "event": r.event } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_a_message_of_its_own_with_its_text_escaped() {
        let r = Report {
            key: "drill:q:7".into(),
            event: "drill".into(),
            title: "drill report: redis-cache-failure on cache".into(),
            text: "  steps      restart-redis: succeeded\n  note       <!channel> & <https://x|y>"
                .into(),
            data: json!({}),
            now: chrono::Utc::now(),
        };
        let m = report_message("C1", &r);
        assert_eq!(m["channel"], "C1");
        assert_eq!(m["metadata"]["event_type"], REPORT_EVENT);
        assert!(m["metadata"]["event_payload"].get("incident").is_none());
        assert_eq!(
            m["blocks"][0]["text"]["text"],
            "drill report: redis-cache-failure on cache"
        );
        assert_eq!(
            m["blocks"][1]["text"]["text"],
            "```  steps      restart-redis: succeeded\n  note       &lt;!channel&gt; &amp; &lt;https://x|y&gt;```"
        );
    }

    #[test]
    fn outside_text_is_escaped_but_medics_mentions_stay() {
        assert_eq!(
            escape("<!channel> <https://evil|ok> & <@U1>"),
            "&lt;!channel&gt; &lt;https://evil|ok&gt; &amp; &lt;@U1&gt;"
        );
        assert_eq!(
            escape_decision("step x approved by <@U0APPROVER> at 10:02 UTC"),
            "step x approved by <@U0APPROVER> at 10:02 UTC"
        );
        assert_eq!(
            escape_decision("acknowledged by <!channel>"),
            "acknowledged by &lt;!channel&gt;"
        );
        assert_eq!(
            escape_decision("acknowledged by <@U1|<!here>> & <@U2>"),
            "acknowledged by &lt;@U1|&lt;!here&gt;&gt; &amp; &lt;@U2&gt;"
        );
        assert_eq!(escape_decision("by <@U1"), "by &lt;@U1");
        // A cut never leaves half an entity.
        assert_eq!(esc_cut("ab<cd", 4), "ab&lt;…");
    }

    /// Every mrkdwn field of the message: check output and labels in
    /// observed / done / next / targets, and the fallback text.
    #[test]
    fn the_message_carries_outside_text_escaped() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let bad = "<!channel> <https://evil|x> &";
        let v = View {
            incident: crate::store::Incident {
                id: 3,
                scenario: "s".into(),
                instance: String::new(),
                state: IncidentState::Escalated,
                severity: "high".into(),
                summary: format!("down {bad}"),
                opened_at: at,
                updated_at: at,
                resolved_at: None,
                cause: None,
            },
            rto: None,
            targets: vec![bad.into()],
            observed: vec![format!(
                "symptom s: ok → failing (failing: HTTP 500: {bad})"
            )],
            done: vec![format!("step r failed: {bad}")],
            next: Some(format!("level 2 {bad}")),
            awaiting: None,
            decisions: vec![format!("acknowledged by <@U1> {bad}")],
            dependents: Vec::new(),
            public: false,
            checklist: Vec::new(),
            now: at,
        };
        let (blocks, text) = render(&v);
        // The header is `plain_text`: Slack reads no markup in it.
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        let blocks = serde_json::to_string(&blocks[1..]).unwrap();
        let all = format!("{blocks}{text}");
        assert!(
            !all.contains("<!channel>") && !all.contains("<https://"),
            "{all}"
        );
        assert_eq!(
            all.matches("&lt;!channel&gt; &lt;https://evil|x&gt; &amp;")
                .count(),
            6,
            "{all}"
        );
        assert!(
            blocks.contains("acknowledged by <@U1> &lt;!channel&gt;"),
            "{blocks}"
        );
    }

    /// The post-mortem reminder mentions the engineer who acknowledged
    /// (a verified click's user ID) besides the notifier's own mentions,
    /// each once; the reminder's text itself stays escaped.
    #[test]
    fn the_reminder_mentions_the_acknowledging_engineer() {
        let c = Config {
            token: crate::secret::SecretRef::Env("MEDIC_TEST_UNSET_TOKEN".into()),
            channel: "C1".into(),
            mention: vec!["U0ONCALL".into(), "S0SRE".into()],
            api_url: "http://127.0.0.1:1".into(),
        };
        let s = SlackNotifier::new("oncall", &c);
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let n = Notice {
            kind: super::super::NoticeKind::Notice,
            key: "1:notice:postmortem:oncall".into(),
            level: 0,
            level_name: None,
            text: "Post-mortem due: <b> (acknowledged by <@U0ALICE>)".into(),
            entries: Vec::new(),
            more: 0,
            view: View {
                incident: crate::store::Incident {
                    id: 1,
                    scenario: "s".into(),
                    instance: String::new(),
                    state: IncidentState::Resolved,
                    severity: "high".into(),
                    summary: "x".into(),
                    opened_at: at,
                    updated_at: at,
                    resolved_at: Some(at),
                    cause: None,
                },
                rto: None,
                targets: Vec::new(),
                observed: Vec::new(),
                done: Vec::new(),
                next: None,
                awaiting: None,
                decisions: Vec::new(),
                dependents: Vec::new(),
                public: false,
                checklist: Vec::new(),
                now: at,
            },
            reference: None,
            maybe_sent: false,
            event: "postmortem".into(),
            mention: true,
            ping: vec!["U0ONCALL".into(), "U0ALICE".into()],
            public: None,
        };
        assert_eq!(
            s.thread_text(&n),
            "<@U0ONCALL> <@U0ALICE> <!subteam^S0SRE> Post-mortem due: &lt;b&gt; (acknowledged by &lt;@U0ALICE&gt;)"
        );
    }
}
