//! The email notifier: one plain-text message per notice, over SMTP with
//! STARTTLS (or implicit TLS) and authentication, through `lettre` on
//! tokio and rustls. Stakeholders, affected users (`bcc`) and executives
//! are lists of this kind, named in a policy's levels or its
//! communication plan like any notifier.
//!
//! Each notice type has its template ([`Template`]): opened, escalated,
//! progress, resolved, FYI and the post-mortem reminder; the affected
//! users' two ([`public_body`]) show only what the public status page
//! shows. Text from
//! outside (labels in the summary, check output, timeline messages) is
//! data: it is put in once, never read as a template, and loses its
//! control characters in the subject (no header can be forged); the
//! body is `text/plain`, so nothing in it is markup.
//!
//! Deliveries go through the outbox like every notifier's: SMTP errors
//! are retried with the dispatcher's backoff, a refused recipient or
//! message (5xx other than authentication) is not; an authentication
//! failure is retried, so a password fixed by a reload delivers what
//! waited. The password never appears in an error (nor its base64 forms
//! in a server's echo). Every message carries a deterministic
//! `Message-ID` from the outbox key: a copy a crash may cause is one
//! receivers can drop.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{
    Delivered, Notice, NoticeKind, Notifier, NotifyError, PublicNotice, Report, View, human,
};
use crate::config::{EmailNotifier as Config, EmailTls};
use crate::store::IncidentState;

/// One SMTP exchange may take this long (connect, TLS, AUTH, DATA).
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a message is about; each has its subject and opening line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// An incident opened (the channel's notice, the executives' P1).
    Opened,
    /// A level is paged, or the plan gave up.
    Escalated,
    /// A status update, an acknowledgement, the RTO clock.
    Progress,
    /// It is over.
    Resolved,
    /// medic fixed it alone.
    Fyi,
    /// The post-mortem is due.
    Postmortem,
    /// The affected users are told (the public template).
    Users,
    /// The affected users hear it is over (the public template).
    UsersResolved,
}

impl Template {
    /// The template of a notice, if email carries it (updates that only
    /// redraw a Slack message are not mailed).
    pub fn of(n: &Notice) -> Option<Self> {
        Some(match (n.kind, n.event()) {
            (NoticeKind::Notice, super::comms::USERS) => Template::Users,
            (NoticeKind::Resolution, super::comms::USERS) => Template::UsersResolved,
            (NoticeKind::Notice, "fyi") => Template::Fyi,
            (NoticeKind::Notice, "postmortem") => Template::Postmortem,
            (NoticeKind::Notice, "rto") => Template::Progress,
            (NoticeKind::Notice, _) => Template::Opened,
            (NoticeKind::Page, _) => Template::Escalated,
            (NoticeKind::Update, "escalate" | "reopen") => Template::Escalated,
            (NoticeKind::Update, "acknowledge" | "rto") => Template::Progress,
            (NoticeKind::Update, _) => return None,
            (NoticeKind::Status, _) => Template::Progress,
            (NoticeKind::Resolution, _) => Template::Resolved,
        })
    }

    /// The word in the subject.
    fn word(self) -> &'static str {
        match self {
            Template::Opened => "Opened",
            Template::Escalated => "Escalated",
            Template::Progress => "Update",
            Template::Resolved => "Resolved",
            Template::Fyi => "FYI, fixed by medic",
            Template::Postmortem => "Post-mortem due",
            Template::Users => "",
            Template::UsersResolved => "Resolved",
        }
    }

    /// A template for the affected users: only public words.
    pub fn is_public(self) -> bool {
        matches!(self, Template::Users | Template::UsersResolved)
    }
}

/// The affected users' subject: `PREFIX[Resolved: ]PUBLIC NAME`
/// (`Major outage: Patient portal`).
pub fn public_subject(prefix: &str, t: Template, p: &PublicNotice) -> String {
    let word = match t {
        Template::UsersResolved => "Resolved: ",
        _ => "",
    };
    one_line(&format!("{prefix}{word}{}", cut(&p.incident.name, 200)))
}

/// The affected users' body: what the public status page shows of the
/// incident (its name, status and times, its components' states now, the
/// updates on-call wrote, newest first), nothing else: no summary, label,
/// target, host, check output, step, timeline or incident number.
pub fn public_body(p: &PublicNotice) -> String {
    let i = &p.incident;
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let status = |s: super::statuspage::Status| {
        let w = s.as_str();
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    let mut out = format!("{}\n{}\n", i.name, "=".repeat(i.name.chars().count()));
    out.push_str(&format!("Status:   {}\n", status(i.status)));
    out.push_str(&format!("Started:  {}\n", when(i.started_at)));
    if let Some(r) = i.resolved_at {
        out.push_str(&format!("Resolved: {}\n", when(r)));
    }
    out.push_str("\nComponents:\n");
    for (c, s) in &p.components {
        out.push_str(&format!("  - {c}: {}\n", s.label()));
    }
    out.push_str("\nUpdates:\n");
    for u in &i.updates {
        out.push_str(&format!(
            "  {} — {}: {}\n",
            when(u.at),
            status(u.status),
            cut(&u.body, super::public::MAX_BODY)
        ));
    }
    // The last line ends without a line break: SMTP's DATA adds one.
    out.push_str(&format!("\n-- \n{}", p.title));
    out
}

/// `text` on one line with no control characters: what may go in a
/// header.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
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

/// The RTO clock in words.
fn rto_clock(v: &View) -> String {
    let end = v.incident.resolved_at.unwrap_or(v.now);
    let took = (end - v.incident.opened_at).to_std().unwrap_or_default();
    match v.rto {
        None => format!("{} since detection", human(took)),
        Some(rto) if took <= rto => format!("{} of {} used", human(took), human(rto)),
        Some(rto) => format!("RTO {} missed by {}", human(rto), human(took - rto)),
    }
}

/// The subject of a notice: `PREFIX[SEVERITY] WORD: SUMMARY (incident #ID)`.
pub fn subject(prefix: &str, t: Template, n: &Notice) -> String {
    let inc = &n.view.incident;
    let level = match (t, &n.level_name) {
        (Template::Escalated, Some(who)) if n.kind == NoticeKind::Page => format!(" — {who}"),
        _ => String::new(),
    };
    one_line(&format!(
        "{prefix}[{}] {}: {} (incident #{}){level}",
        inc.severity,
        t.word(),
        cut(&inc.summary, 200),
        inc.id
    ))
}

/// The body of a notice: what it says, the incident as medic knows it,
/// and the timeline entries it carries.
pub fn body(t: Template, n: &Notice) -> String {
    let v = &n.view;
    let inc = &v.incident;
    let mut out = String::new();
    out.push_str(&n.text);
    out.push_str("\n\n");
    let row = |out: &mut String, k: &str, val: &str| {
        out.push_str(&format!("{k:<10} {val}\n"));
    };
    row(
        &mut out,
        "Incident:",
        &format!("#{} {} ({})", inc.id, inc.scenario, inc.severity),
    );
    row(&mut out, "Summary:", &inc.summary);
    row(&mut out, "State:", inc.state.as_str());
    if !v.targets.is_empty() {
        row(&mut out, "Targets:", &v.targets.join(", "));
    }
    row(
        &mut out,
        "Opened:",
        &inc.opened_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    if let Some(at) = inc
        .resolved_at
        .filter(|_| inc.state == IncidentState::Resolved)
    {
        row(
            &mut out,
            "Resolved:",
            &at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        );
    }
    row(&mut out, "RTO clock:", &rto_clock(v));
    let list = |out: &mut String, title: &str, items: &[String]| {
        if !items.is_empty() {
            out.push_str(&format!("\n{title}:\n"));
            for i in items {
                out.push_str(&format!("  - {}\n", cut(i, 500)));
            }
        }
    };
    if !matches!(t, Template::Postmortem) {
        list(&mut out, "Observed", &v.observed);
        list(&mut out, "Done", &v.done);
        if let Some(next) = &v.next {
            out.push_str(&format!("\nNext: {next}\n"));
        }
        list(&mut out, "Decisions", &v.decisions);
    }
    if t == Template::Postmortem && !v.checklist.is_empty() {
        let done = v.checklist.iter().filter(|s| s.done).count();
        out.push_str(&format!(
            "\nPost-recovery checklist ({done} of {} ticked):\n",
            v.checklist.len()
        ));
        for s in &v.checklist {
            let by = match (&s.by, s.done) {
                (Some(by), true) => format!(" (by {by})"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  [{}] {} {}{by}\n",
                if s.done { "x" } else { " " },
                s.id,
                s.text
            ));
        }
    }
    if !n.entries.is_empty() {
        out.push_str("\nTimeline:\n");
        for e in n.entries.iter().take(60) {
            out.push_str(&format!(
                "  {} {}: {}\n",
                e.at.format("%H:%M:%S"),
                e.kind,
                cut(&e.message, 500)
            ));
        }
        let more = n.entries.len().saturating_sub(60) + n.more;
        if more > 0 {
            out.push_str(&format!("  … and {more} more\n"));
        }
    }
    // The last line ends without a line break: SMTP's DATA adds one.
    out.push_str(&format!("\n-- \nmedic, incident #{}", inc.id));
    out
}

/// A `Message-ID` from the outbox key (`7:notice:open:mail` →
/// `<medic.7.notice.open.mail@medic>`): only characters an id may hold.
fn message_id(key: &str) -> String {
    let id: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("<medic.{id}@medic>")
}

/// Sends notices to one list of recipients through one SMTP relay.
pub struct EmailNotifier {
    name: String,
    from: Result<Mailbox, String>,
    to: Vec<Mailbox>,
    bcc: Vec<Mailbox>,
    prefix: String,
    transport: Result<AsyncSmtpTransport<Tokio1Executor>, String>,
    /// What must never show in an error: the password and the base64
    /// forms an AUTH exchange sends.
    secrets: Vec<String>,
}

impl EmailNotifier {
    pub fn new(name: &str, c: &Config) -> Self {
        let mailboxes = |v: &[String]| v.iter().filter_map(|a| a.parse().ok()).collect();
        let mut secrets = Vec::new();
        let transport = (|| {
            let tls = match c.tls {
                EmailTls::None => Tls::None,
                mode => {
                    let mut b = TlsParameters::builder(c.server.clone());
                    if let Some(ca) = &c.ca {
                        let path = c.ca.as_ref().map(|p| p.display().to_string());
                        let pem = std::fs::read(ca)
                            .map_err(|e| format!("ca {}: {e}", path.clone().unwrap_or_default()))?;
                        let cert = Certificate::from_pem(&pem)
                            .map_err(|e| format!("ca {}: {e}", path.clone().unwrap_or_default()))?;
                        b = b.add_root_certificate(cert);
                    }
                    let p = b.build().map_err(|e| format!("TLS: {e}"))?;
                    match mode {
                        EmailTls::Tls => Tls::Wrapper(p),
                        _ => Tls::Required(p),
                    }
                }
            };
            let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.server.clone())
                .port(c.port())
                .tls(tls)
                .timeout(Some(SMTP_TIMEOUT));
            if let (Some(user), Some(pw)) = (&c.username, &c.password) {
                let pw = pw.resolve().map_err(|e| format!("password: {e}"))?;
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                secrets.push(pw.expose().to_string());
                secrets.push(b64(pw.expose()));
                secrets.push(b64(&format!("\0{user}\0{}", pw.expose())));
                t = t
                    .credentials(Credentials::new(user.clone(), pw.expose().to_string()))
                    .authentication(vec![Mechanism::Plain, Mechanism::Login]);
            }
            Ok::<_, String>(t.build())
        })();
        secrets.retain(|s| !s.is_empty());
        EmailNotifier {
            name: name.to_string(),
            from: c
                .from
                .parse()
                .map_err(|e: lettre::address::AddressError| e.to_string()),
            to: mailboxes(&c.to),
            bcc: mailboxes(&c.bcc),
            prefix: c.subject_prefix.clone(),
            transport,
            secrets,
        }
    }

    fn scrub(&self, mut e: NotifyError) -> NotifyError {
        for s in &self.secrets {
            e = e.scrubbed(s);
        }
        e
    }

    /// The message for a notice, if email carries it.
    pub fn message(&self, n: &Notice) -> Result<Option<Message>, NotifyError> {
        let Some(t) = Template::of(n) else {
            return Ok(None);
        };
        let from = self
            .from
            .as_ref()
            .map_err(|e| NotifyError::Permanent(format!("{}: from: {e}", self.name)))?;
        let (subject, body) = match (t.is_public(), &n.public) {
            (false, _) => (subject(&self.prefix, t, n), body(t, n)),
            (true, Some(p)) => (public_subject(&self.prefix, t, p), public_body(p)),
            (true, None) => {
                return Err(NotifyError::Permanent(format!(
                    "{}: an affected users' notice without its public incident",
                    self.name
                )));
            }
        };
        self.envelope(from, subject, &n.key, n.view.now, body)
            .map(Some)
    }

    /// A plain-text message from `from` to every recipient.
    fn envelope(
        &self,
        from: &Mailbox,
        subject: String,
        key: &str,
        date: chrono::DateTime<chrono::Utc>,
        body: String,
    ) -> Result<Message, NotifyError> {
        let mut b = Message::builder()
            .from(from.clone())
            .subject(subject)
            .message_id(Some(message_id(key)))
            .date(SystemTime::from(date))
            .header(ContentType::TEXT_PLAIN);
        for m in &self.to {
            b = b.to(m.clone());
        }
        for m in &self.bcc {
            b = b.bcc(m.clone());
        }
        b.body(body)
            .map_err(|e| NotifyError::Permanent(format!("{}: message: {e}", self.name)))
    }

    /// Sends `msg` through the relay.
    async fn deliver(&self, msg: Message) -> Result<Delivered, NotifyError> {
        let transport = self
            .transport
            .as_ref()
            .map_err(|e| NotifyError::Permanent(format!("{}: {e}", self.name)))?;
        let resp = transport
            .send(msg)
            .await
            .map_err(|e| self.scrub(sorted(e)))?;
        let code = resp.code().to_string();
        Ok(Delivered {
            reference: None,
            detail: format!(
                "SMTP {code}: sent to {} recipient(s)",
                self.to.len() + self.bcc.len()
            ),
        })
    }
}

/// Sorts an SMTP failure: a refused recipient or message is not worth
/// trying again; authentication, 4xx, TLS and network failures are (a
/// reload may fix the password; the relay may come back).
fn sorted(e: lettre::transport::smtp::Error) -> NotifyError {
    let mut reason = format!("SMTP: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !reason.ends_with(&s) {
            reason.push_str(": ");
            reason.push_str(&s);
        }
        cause = c.source();
    }
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    let auth = matches!(code.as_str(), "530" | "534" | "535" | "538");
    if e.is_permanent() && !auth {
        NotifyError::Permanent(reason)
    } else {
        NotifyError::Retry {
            reason,
            after: None,
        }
    }
}

#[async_trait::async_trait]
impl Notifier for EmailNotifier {
    async fn send(&self, n: &Notice) -> Result<Delivered, NotifyError> {
        let Some(msg) = self.message(n)? else {
            return Ok(Delivered {
                reference: None,
                detail: "nothing for email".into(),
            });
        };
        self.deliver(msg).await
    }

    /// A report: subject `PREFIX` + its title, the text as the body.
    async fn report(&self, r: &Report) -> Result<Delivered, NotifyError> {
        let from = self
            .from
            .as_ref()
            .map_err(|e| NotifyError::Permanent(format!("{}: from: {e}", self.name)))?;
        let subject = one_line(&format!("{}{}", self.prefix, cut(&r.title, 200)));
        let body = format!("{}\n\n-- \nmedic, {}\n", r.text.trim_end(), r.event);
        let msg = self.envelope(from, subject, &r.key, r.now, body)?;
        self.deliver(msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_line_whatever_the_labels_hold() {
        assert_eq!(
            one_line("Redis down\r\nBcc: evil@example.com\u{0}x"),
            "Redis down Bcc: evil@example.com x"
        );
        assert_eq!(
            message_id("7:notice:open:exec mail"),
            "<medic.7.notice.open.exec.mail@medic>"
        );
    }
}
