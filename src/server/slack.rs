//! `POST /slack/interactions`: Slack's button clicks on incident messages.
//!
//! Every request is verified first: `X-Slack-Signature` must be
//! `v0=hex(HMAC-SHA256(signing secret, "v0:{X-Slack-Request-Timestamp}:{raw body}"))`
//! (constant-time comparison), the timestamp within 300 s of now, and the
//! signature not seen before (a replay within the window is refused too:
//! signatures are claimed in the store, so the replay cache survives a
//! restart and is shared by replicas on one PostgreSQL store).
//! Anything else is 401 and changes nothing. A malformed payload or an
//! unknown action id is 400, saying what is wrong.
//!
//! A valid click is answered at once (Slack wants an answer within 3 s)
//! and decided asynchronously: only configured approvers (user IDs, or
//! members of user groups) may Approve, Reject or Resolve; others get an
//! ephemeral refusal. A repeated click changes nothing and tells the
//! clicker who acted first. The incident message itself is updated by the
//! pager.
//!
//! *Post status update* (on incidents that affect a public component)
//! opens a modal (`views.open`); its `view_submission` posts the update
//! ([`crate::page::Pager::post_update`]), approvers only. A submission
//! whose fields do not pass is answered with `response_action: errors`
//! (the modal stays open).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::page::slack::{escape, escape_decision};
use crate::page::{Decision, DecisionKind, Pager};

/// How far a request's timestamp may be from now.
pub const WINDOW_SECS: i64 = 300;

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("X-Slack-Request-Timestamp {0:?} is not a number")]
    BadTimestamp(String),
    #[error("request timestamp is {0} s away from now (window: 300 s): expired or replayed")]
    Expired(i64),
    #[error("signature does not match")]
    Mismatch,
    #[error("signature already used (replayed request)")]
    Replayed,
}

/// `v0=` + hex HMAC-SHA256 of `v0:{ts}:{body}`.
pub fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies a request's signature and timestamp against `now` (unix s).
pub fn verify(
    secret: &str,
    ts: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let ts = ts.ok_or(SignatureError::Missing("X-Slack-Request-Timestamp"))?;
    let signature = signature.ok_or(SignatureError::Missing("X-Slack-Signature"))?;
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(ts.chars().take(20).collect()))?;
    let skew = now.saturating_sub(t);
    if skew.abs() > WINDOW_SECS {
        return Err(SignatureError::Expired(skew));
    }
    let want = sign(secret, ts, body);
    if bool::from(want.as_bytes().ct_eq(signature.trim().as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The store key of a request's signature in the replay cache
/// ([`crate::store::Store::claim_once`]).
fn replay_key(signature: &str) -> String {
    format!("slack-interaction:{signature}")
}

/// Clicks waiting to be decided, one at a time, off the request path: the
/// answer to Slack never waits for the store or for Slack's API, and a
/// burst of clicks does not starve the answers.
type Queue = mpsc::Sender<(Arc<Pager>, crate::config::SlackApp, Interaction)>;

/// What the route keeps between requests.
#[derive(Default)]
struct Interactions {
    queue: OnceLock<Queue>,
    /// The signing secret, read once (per reload) instead of per request.
    secret: Mutex<Option<(crate::secret::SecretRef, Arc<crate::secret::Secret>)>>,
}

impl Interactions {
    fn queue(&self) -> &Queue {
        self.queue.get_or_init(|| {
            let (tx, mut rx) =
                mpsc::channel::<(Arc<Pager>, crate::config::SlackApp, Interaction)>(4096);
            tokio::spawn(async move {
                while let Some((pager, app, interaction)) = rx.recv().await {
                    let done = match interaction {
                        Interaction::Click(click) => act(&pager, &app, click).await,
                        Interaction::OpenUpdate(o) => open_update(&pager, &app, o).await,
                        Interaction::SubmitUpdate(u) => submit_update(&pager, &app, u).await,
                    };
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "slack interaction: could not answer the clicker");
                    }
                }
            });
            tx
        })
    }

    fn secret(
        &self,
        r: &crate::secret::SecretRef,
    ) -> Result<Arc<crate::secret::Secret>, crate::secret::SecretError> {
        let mut g = self.secret.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, s)) = g.as_ref()
            && known == r
        {
            return Ok(s.clone());
        }
        let s = Arc::new(r.resolve()?);
        *g = Some((r.clone(), s.clone()));
        Ok(s)
    }
}

/// The interactions route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(interactions))
        .layer(Extension(Arc::new(Interactions::default())))
}

fn refuse(code: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    tracing::warn!(status = code.as_u16(), "slack interaction refused: {msg}");
    (code, format!("{msg}\n")).into_response()
}

/// One click, parsed (fields private: only the route acts on it).
pub struct Click {
    kind: DecisionKind,
    /// A checklist button (`tick:ITEM`): tick the item instead of deciding.
    tick: Option<String>,
    incident: i64,
    step: Option<String>,
    user: String,
    channel: String,
}

/// *Post status update* clicked: the modal opens for `user`.
pub struct OpenUpdate {
    incident: i64,
    user: String,
    channel: String,
    trigger_id: String,
}

/// The modal submitted: a public update, checked already.
pub struct SubmitUpdate {
    incident: i64,
    user: String,
    channel: String,
    update: crate::page::public::PostUpdate,
}

/// One interaction, parsed: a decision button, the *Post status update*
/// button, or the submission of its modal.
pub enum Interaction {
    Click(Click),
    OpenUpdate(OpenUpdate),
    SubmitUpdate(SubmitUpdate),
}

/// Why a request body was refused: malformed (400), or a modal whose
/// fields do not pass (answered with Slack's `response_action: errors`,
/// so the modal stays open and says which field).
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    Bad(String),
    Field { block: &'static str, error: String },
}

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        ParseError::Bad(s)
    }
}

impl From<&str> for ParseError {
    fn from(s: &str) -> Self {
        ParseError::Bad(s.to_string())
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Bad(s) => f.write_str(s),
            ParseError::Field { block, error } => write!(f, "{block}: {error}"),
        }
    }
}

/// The submission of the status update modal.
fn parse_submission(v: &serde_json::Value, user: String) -> Result<Interaction, ParseError> {
    let view = &v["view"];
    if view["callback_id"] != crate::page::slack::STATUS_MODAL {
        return Err(format!(
            "view callback_id {} is not handled (only {})",
            view["callback_id"],
            crate::page::slack::STATUS_MODAL
        )
        .into());
    }
    let meta = view["private_metadata"].as_str().unwrap_or_default();
    let (inc, channel) = meta.split_once(':').unwrap_or((meta, ""));
    let incident = inc
        .parse::<i64>()
        .map_err(|_| format!("private_metadata {meta:?} does not name an incident"))?;
    let values = &view["state"]["values"];
    let status = values["status"]["status"]["selected_option"]["value"]
        .as_str()
        .unwrap_or("investigating");
    let body = values["body"]["body"]["value"].as_str().unwrap_or_default();
    let update = crate::page::public::PostUpdate::new(&format!("<@{user}>"), status, body, "slack")
        .map_err(|error| ParseError::Field {
            block: if body.trim().is_empty() || body.chars().count() > crate::page::public::MAX_BODY
            {
                "body"
            } else {
                "status"
            },
            error,
        })?;
    Ok(Interaction::SubmitUpdate(SubmitUpdate {
        incident,
        user,
        channel: channel.to_string(),
        update,
    }))
}

/// Reads an interaction request body (a form whose `payload` field is the
/// JSON of a `block_actions` click or a `view_submission`), or says what
/// is wrong. Public for the fuzz target (fuzz/); the route is its only
/// other caller.
pub fn parse(body: &[u8]) -> Result<Interaction, ParseError> {
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes(body).map_err(|e| format!("body is not a form: {e}"))?;
    let payload = form.get("payload").ok_or("body has no `payload` field")?;
    let v: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let user = v["user"]["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("payload has no user.id")?
        .to_string();
    if v["type"] == "view_submission" {
        return parse_submission(&v, user);
    }
    if v["type"] != "block_actions" {
        return Err(format!(
            "payload type {} is not handled (only block_actions and view_submission)",
            v["type"]
        )
        .into());
    }
    let channel = v["channel"]["id"]
        .as_str()
        .or(v["container"]["channel_id"].as_str())
        .unwrap_or_default()
        .to_string();
    let action = v["actions"]
        .as_array()
        .and_then(|a| a.first())
        .ok_or("payload has no actions")?;
    let id = action["action_id"].as_str().unwrap_or_default();
    if id == crate::page::slack::STATUS_UPDATE {
        let value = action["value"].as_str().unwrap_or_default();
        let incident = value
            .parse::<i64>()
            .map_err(|_| format!("action value {value:?} does not name an incident"))?;
        let trigger_id = v["trigger_id"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or("payload has no trigger_id (needed to open the modal)")?
            .to_string();
        return Ok(Interaction::OpenUpdate(OpenUpdate {
            incident,
            user,
            channel,
            trigger_id,
        }));
    }
    if let Some(item) = id.strip_prefix("tick:") {
        let value = action["value"].as_str().unwrap_or_default();
        let incident = value
            .split_once(':')
            .filter(|(_, i)| *i == item)
            .and_then(|(n, _)| n.parse::<i64>().ok())
            .ok_or_else(|| {
                format!(
                    "checklist action value {:?} is not `INCIDENT:{}`",
                    value.chars().take(40).collect::<String>(),
                    item.chars().take(20).collect::<String>()
                )
            })?;
        return Ok(Interaction::Click(Click {
            kind: DecisionKind::Acknowledge,
            tick: Some(item.to_string()),
            incident,
            step: None,
            user,
            channel,
        }));
    }
    let kind = DecisionKind::parse(id).ok_or_else(|| {
        format!(
            "unknown action id {:?} (known: {}, {})",
            id.chars().take(40).collect::<String>(),
            DecisionKind::ALL.join(", "),
            crate::page::slack::STATUS_UPDATE
        )
    })?;
    let value = action["value"].as_str().unwrap_or_default();
    let (inc, step) = match value.split_once(':') {
        Some((i, s)) => (i, Some(s.to_string())),
        None => (value, None),
    };
    let incident = inc
        .parse::<i64>()
        .map_err(|_| format!("action value {value:?} does not name an incident"))?;
    if matches!(kind, DecisionKind::Approve | DecisionKind::Reject) && step.is_none() {
        return Err(format!("action {id} needs a step in its value (`ID:STEP`)").into());
    }
    Ok(Interaction::Click(Click {
        kind,
        tick: None,
        incident,
        step,
        user,
        channel,
    }))
}

/// A Slack interaction, as Slack posts it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: the body is parsed by [`parse`]
pub struct Form {
    /// The interaction, JSON.
    payload: String,
}

/// The answer to a modal whose fields need fixing.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: built with json!
pub struct ModalErrors {
    /// `errors`.
    response_action: String,
    /// Per block, what to fix.
    errors: HashMap<String, String>,
}

/// Slack's interactivity request URL (buttons, the status-update modal).
#[utoipa::path(
    post,
    path = "/slack/interactions",
    tag = "slack",
    params(
        ("X-Slack-Signature" = String, Header, description = "`v0=` HMAC-SHA256 of the request with slack.signing_secret."),
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds; within 5 minutes of medic's clock."),
    ),
    request_body(content = Form, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Taken (acted on in the background), or the modal's fields to fix.",
            content((ModalErrors = "application/json"))),
        (status = 400, description = "A signed request medic cannot read.", body = String, content_type = "text/plain"),
        (status = 401, description = "A missing, wrong, stale or replayed signature.", body = String, content_type = "text/plain"),
        (status = 404, description = "Slack interactivity is not configured (`slack:`).", body = String, content_type = "text/plain"),
        (status = 503, description = "Not the leader, the store failed, too many clicks waiting, or the listener is busy.",
            content((String = "text/plain"), (super::openapi::Refusal = "application/json"))),
    )
)]
async fn interactions(
    State(st): State<AppState>,
    Extension(ix): Extension<Arc<Interactions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Unsigned requests are refused first, whether Slack is configured or not.
    for name in ["X-Slack-Request-Timestamp", "X-Slack-Signature"] {
        let v = headers.get(name).and_then(|v| v.to_str().ok());
        if v.is_none_or(|v| v.trim().is_empty()) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                SignatureError::Missing(name).to_string(),
            );
        }
    }
    let Some(pager) = st.pager.borrow().clone() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is not the leader (or is starting)",
        );
    };
    let Some(app) = pager.slack_app() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "Slack interactivity is not configured (config `slack:`)",
        );
    };
    let secret = match ix.secret(&app.signing_secret) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("slack.signing_secret: {e}");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing secret unavailable",
            );
        }
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let now = st.clock.now().timestamp();
    let signature = header("x-slack-signature");
    if let Err(e) = verify(
        secret.expose(),
        header("x-slack-request-timestamp"),
        signature,
        &body,
        now,
    ) {
        return refuse(StatusCode::UNAUTHORIZED, e.to_string());
    }
    // A signature is good for the window either side of its timestamp:
    // it is kept in the store (surviving restarts, shared by replicas)
    // until the window has passed for sure.
    let at = st.clock.now();
    let until = at + chrono::Duration::seconds(WINDOW_SECS * 2);
    match st
        .store
        .claim_once(&replay_key(signature.unwrap_or_default()), at, until)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                SignatureError::Replayed.to_string(),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "slack interaction: cannot record the signature");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record the request (store unavailable); try again",
            );
        }
    }
    let interaction = match parse(&body) {
        Ok(c) => c,
        Err(ParseError::Field { block, error }) => {
            // The modal stays open and says what to fix.
            let answer =
                serde_json::json!({ "response_action": "errors", "errors": { block: error } });
            return (StatusCode::OK, axum::Json(answer)).into_response();
        }
        Err(ParseError::Bad(e)) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    if ix.queue().try_send((pager, app, interaction)).is_err() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many clicks waiting; try again in a moment",
        );
    }
    StatusCode::OK.into_response()
}

/// Whether `user` may approve, reject or resolve.
async fn approver(pager: &Pager, app: &crate::config::SlackApp, user: &str) -> bool {
    if app.approvers.iter().any(|u| u == user) {
        return true;
    }
    let Some(client) = pager.slack_client() else {
        return false;
    };
    for g in &app.approver_groups {
        match client.group_members(g).await {
            Ok(members) if members.iter().any(|m| m == user) => return true,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(group = %g, error = %e, "cannot list the user group's members")
            }
        }
    }
    false
}

async fn act(
    pager: &Pager,
    app: &crate::config::SlackApp,
    click: Click,
) -> Result<(), crate::page::NotifyError> {
    let reply = |text: String| {
        let client = pager.slack_client();
        let (channel, user) = (click.channel.clone(), click.user.clone());
        async move {
            match client {
                Some(c) if !channel.is_empty() => c.ephemeral(&channel, &user, &text).await,
                _ => Ok(()),
            }
        }
    };
    if let Some(item) = &click.tick {
        // Anyone in the channel may tick an item (it changes no system).
        let by = format!("<@{}>", click.user);
        return match pager.tick(click.incident, item, true, &by, "slack").await {
            Ok(o) if o.first => Ok(()),
            Ok(o) => reply(format!("Nothing changed: {}.", escape_decision(&o.message))).await,
            Err(e) => reply(format!("Nothing changed: {}.", escape(&e.to_string()))).await,
        };
    }
    if click.kind.needs_approver() && !approver(pager, app, &click.user).await {
        tracing::warn!(user = %click.user, action = click.kind.as_str(), incident = click.incident, "refused: not an approver");
        return reply(format!(
            "Sorry <@{}>, only approvers may {} incidents. Nothing was changed.",
            click.user,
            click.kind.as_str()
        ))
        .await;
    }
    let d = Decision {
        kind: click.kind,
        by: format!("<@{}>", click.user),
        step: click.step.clone(),
        note: String::new(),
        via: "slack".into(),
    };
    match pager.decide(click.incident, d).await {
        Ok(o) if o.first => Ok(()),
        Ok(o) => reply(format!("Nothing changed: {}.", escape_decision(&o.message))).await,
        Err(e) => reply(format!("Nothing changed: {}.", escape(&e.to_string()))).await,
    }
}

/// An ephemeral answer to `user` in `channel`, when there is a channel.
async fn tell(
    pager: &Pager,
    channel: &str,
    user: &str,
    text: &str,
) -> Result<(), crate::page::NotifyError> {
    match pager.slack_client() {
        Some(c) if !channel.is_empty() => c.ephemeral(channel, user, text).await,
        _ => Ok(()),
    }
}

/// *Post status update*: an approver gets the modal.
async fn open_update(
    pager: &Pager,
    app: &crate::config::SlackApp,
    o: OpenUpdate,
) -> Result<(), crate::page::NotifyError> {
    if !approver(pager, app, &o.user).await {
        tracing::warn!(user = %o.user, incident = o.incident, "refused: not an approver (status update)");
        let text = format!(
            "Sorry <@{}>, only approvers may post public status updates. Nothing was changed.",
            o.user
        );
        return tell(pager, &o.channel, &o.user, &text).await;
    }
    let Some(client) = pager.slack_client() else {
        return Ok(());
    };
    let scenario = match pager.incident_scenario(o.incident).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let text = format!("Nothing changed: incident {} not found.", o.incident);
            return tell(pager, &o.channel, &o.user, &text).await;
        }
        Err(e) => {
            let text = format!("Nothing changed: {}.", escape(&e.to_string()));
            return tell(pager, &o.channel, &o.user, &text).await;
        }
    };
    let components = pager.public_components(&scenario);
    let view = crate::page::slack::status_update_modal(o.incident, &o.channel, &components);
    client.open_view(&o.trigger_id, &view).await
}

/// The modal submitted: an approver's update is posted.
async fn submit_update(
    pager: &Pager,
    app: &crate::config::SlackApp,
    u: SubmitUpdate,
) -> Result<(), crate::page::NotifyError> {
    if !approver(pager, app, &u.user).await {
        tracing::warn!(user = %u.user, incident = u.incident, "refused: not an approver (status update)");
        let text = format!(
            "Sorry <@{}>, only approvers may post public status updates. Nothing was changed.",
            u.user
        );
        return tell(pager, &u.channel, &u.user, &text).await;
    }
    match pager.post_update(u.incident, u.update).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = format!(
                "The status update was not posted: {}.",
                escape(&e.to_string())
            );
            tell(pager, &u.channel, &u.user, &text).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_within_the_window_only() {
        let sig = sign("s3cret", "1000", b"a=b");
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&sig), b"a=b", 1000),
            Ok(())
        );
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&sig), b"a=b", 1300),
            Ok(())
        );
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&sig), b"a=b", 1301),
            Err(SignatureError::Expired(301))
        );
        assert_eq!(
            verify("other", Some("1000"), Some(&sig), b"a=b", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&sig), b"a=c", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", None, Some(&sig), b"a=b", 1000),
            Err(SignatureError::Missing("X-Slack-Request-Timestamp"))
        );
        assert!(matches!(
            verify("s3cret", Some("soon"), Some(&sig), b"a=b", 1000),
            Err(SignatureError::BadTimestamp(_))
        ));
    }
}
