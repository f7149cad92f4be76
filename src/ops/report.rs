//! `medic report ID`: a post-mortem draft in Markdown.
//!
//! The timeline; detection, mitigation and recovery times against the
//! scenario's RTO; every action with its inputs and outcome; and the
//! runbook's post-recovery checklist (Verification, Documentation,
//! Post-Mortem, Improvement Actions) with what medic knows filled in and
//! ticked, and the rest left for humans.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::IncidentDetail;
use crate::diag::Diagnostics;
use crate::store::{AttemptOutcome, IncidentId, OpenError, StoreError};

/// Why a report could not be drawn from the store.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Config(Diagnostics),
    #[error("incident id {0:?} is not a positive integer")]
    BadId(String),
    #[error("{0}")]
    Open(OpenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("incident {0} not found")]
    NotFound(IncidentId),
}

/// The draft of incident `id` from the store of the config at
/// `config_path`, with RTO, RPO and runbook from the config's rules.
pub async fn from_store(config_path: &Path, id: &str) -> Result<String, ReportError> {
    let config = crate::config::load(config_path).map_err(ReportError::Config)?;
    // The scenario gives RTO, RPO and runbook; rules that do not load
    // only cost those lines.
    let scenarios = crate::rules::load_configured(&config).unwrap_or_default();
    let incident_id: IncidentId = id
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ReportError::BadId(id.to_string()))?;
    let store = crate::store::open(&config)
        .await
        .map_err(ReportError::Open)?;
    let incident = store
        .incident(incident_id)
        .await?
        .ok_or(ReportError::NotFound(incident_id))?;
    let timeline = store.timeline(incident_id).await?;
    let attempts = store.incident_attempts(incident_id).await?;
    let sc = scenarios.iter().find(|s| s.name == incident.scenario);
    let d = IncidentDetail {
        rto: sc.map(|s| s.rto.to_string()),
        rpo: sc.and_then(|s| s.rpo.map(|r| r.to_string())),
        runbook: sc.and_then(|s| s.runbook.clone()),
        incident,
        timeline,
        attempts,
    };
    Ok(render(&d, Utc::now()))
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

fn human(d: chrono::Duration) -> String {
    crate::server::status::human(d)
}

/// Outside text (labels, annotations, check output, names) as Markdown
/// shows it literally, on one line: every Markdown and HTML metacharacter
/// is backslash-escaped (CommonMark allows it for all ASCII punctuation),
/// line breaks become spaces, and bare links (`https://`, `www.`) are
/// defused, so a label can neither format the draft, nor break a table,
/// nor plant a link or HTML.
pub fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.char_indices() {
        match c {
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '!' | '|'
            | '<' | '>' | '~' | '&' | '$' => {
                out.push('\\');
                out.push(c);
            }
            ':' if text[i + 1..].starts_with("//") => {
                // `https://x` autolinks (GFM) need a literal `://`.
                out.push_str("\\:");
            }
            '.' if out.to_ascii_lowercase().ends_with("www") => out.push_str("\\."),
            '\r' | '\n' => out.push(' '),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A fence for a code block holding `text`: longer than any run of
/// backticks in it, so the text cannot close the block.
fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

fn tick(done: bool) -> &'static str {
    if done { "[x]" } else { "[ ]" }
}

/// Renders the draft. `now` closes the clocks of an incident still open.
pub fn render(d: &IncidentDetail, now: DateTime<Utc>) -> String {
    let i = &d.incident;
    let rto = d
        .rto
        .as_deref()
        .and_then(|r| humantime::parse_duration(r).ok())
        .and_then(|r| chrono::Duration::from_std(r).ok());
    let detected = i.opened_at;
    let mitigated = d
        .attempts
        .iter()
        .filter(|a| a.outcome == Some(AttemptOutcome::Succeeded))
        .filter_map(|a| a.ended_at)
        .min();
    let recovered = i.resolved_at;
    let first_failure = d
        .timeline
        .iter()
        .find_map(|e| e.data["symptoms"].as_object().map(|_| e.at))
        .unwrap_or(detected);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Post-mortem draft: incident {} ({})\n",
        i.id,
        md_escape(&i.scenario)
    );
    let _ = writeln!(
        md,
        "- **Summary:** {}\n- **Severity:** {}\n- **State:** {}\n- **RTO:** {}{}{}\n",
        md_escape(&i.summary),
        md_escape(&i.severity),
        i.state.as_str(),
        d.rto.as_deref().unwrap_or("unknown (scenario not loaded)"),
        d.rpo
            .as_deref()
            .map(|r| format!("\n- **RPO:** {r}"))
            .unwrap_or_default(),
        d.runbook
            .as_deref()
            .map(|r| format!("\n- **Runbook:** {r}"))
            .unwrap_or_default(),
    );

    md.push_str("## Key times\n\n| milestone | at | since detection | against the RTO |\n|---|---|---|---|\n");
    let vs_rto = |at: DateTime<Utc>| match rto {
        Some(r) if at - detected <= r => {
            format!("within ({} to spare)", human(r - (at - detected)))
        }
        Some(r) => format!("**missed** by {}", human((at - detected) - r)),
        None => "RTO unknown".into(),
    };
    let _ = writeln!(
        md,
        "| detection (incident opened) | {} | 0s | — |",
        time(detected)
    );
    match mitigated {
        Some(t) => {
            let _ = writeln!(
                md,
                "| mitigation (first verified action) | {} | {} | {} |",
                time(t),
                human(t - detected),
                vs_rto(t)
            );
        }
        None => md.push_str("| mitigation | no action was verified | — | — |\n"),
    }
    match recovered {
        Some(t) => {
            let _ = writeln!(
                md,
                "| recovery (symptoms cleared, resolved) | {} | {} | {} |",
                time(t),
                human(t - detected),
                vs_rto(t)
            );
        }
        None => {
            let _ = writeln!(
                md,
                "| recovery | not yet ({} open at {}) | {} | {} |",
                human(now - detected),
                time(now),
                human(now - detected),
                vs_rto(now)
            );
        }
    }
    md.push('\n');

    md.push_str("## Timeline\n\n| at (UTC) | + | kind | what |\n|---|---|---|---|\n");
    for e in &d.timeline {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            e.at.format("%H:%M:%S%.3f"),
            human(e.at - detected),
            md_escape(&e.kind),
            md_escape(&e.message)
        );
    }
    md.push('\n');

    md.push_str("## Actions\n\n");
    if d.attempts.is_empty() {
        md.push_str("No action was attempted.\n\n");
    }
    for a in &d.attempts {
        let inputs = serde_json::to_string_pretty(&a.inputs).unwrap_or_default();
        let fence = fence(&inputs);
        let _ = writeln!(
            md,
            "### {} (`{}`): {}\n\n- started {}{}\n- reason: {}\n- inputs:\n\n{fence}json\n{inputs}\n{fence}\n",
            md_escape(&a.step),
            a.action,
            a.outcome.map_or("in flight", |o| o.as_str()),
            time(a.started_at),
            a.ended_at
                .map(|t| format!(", ended {} (took {})", time(t), human(t - a.started_at)))
                .unwrap_or_default(),
            if a.reason.is_empty() {
                "—".to_string()
            } else {
                md_escape(&a.reason)
            },
        );
    }

    // The runbook's post-recovery checklist.
    let resolved = recovered.is_some();
    let pages: Vec<String> = {
        let mut v: Vec<String> = d
            .timeline
            .iter()
            .filter(|e| e.kind == "page")
            .filter_map(|e| e.data["notifier"].as_str().map(md_escape))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let deviations: Vec<String> = d
        .attempts
        .iter()
        .filter(|a| !matches!(a.outcome, Some(AttemptOutcome::Succeeded)))
        .map(|a| {
            format!(
                "{} ({})",
                md_escape(&a.step),
                a.outcome.map_or("in flight", |o| o.as_str())
            )
        })
        .collect();
    let escalated = d
        .timeline
        .iter()
        .any(|e| e.kind == "state" && e.message.contains("escalat"));
    let unknowns = d
        .timeline
        .iter()
        .filter(|e| e.message.contains("cannot observe"))
        .count();
    // What medic knows of each item: (ticked by medic, note).
    let auto = |id: &str| -> (bool, String) {
        match id {
            "1.1" => (
                resolved,
                if resolved {
                    format!(
                        " — medic saw every symptom of {} clear at {}",
                        md_escape(&i.scenario),
                        time(recovered.unwrap_or(now))
                    )
                } else {
                    " — the incident is still open".into()
                },
            ),
            "1.3" => (
                false,
                d.rpo
                    .as_deref()
                    .map(|r| format!(" (RPO {r})"))
                    .unwrap_or_default(),
            ),
            "1.4" => (
                resolved && unknowns == 0,
                if unknowns > 0 {
                    format!(
                        " — medic could not observe a symptom {unknowns} time(s) during the incident"
                    )
                } else {
                    String::new()
                },
            ),
            "2.1" => (true, format!(" — {} entries above", d.timeline.len())),
            "2.3" => (
                true,
                format!(" — {} attempt(s) in the ledger, above", d.attempts.len()),
            ),
            "2.4" => (
                false,
                if deviations.is_empty() && !escalated {
                    " — none seen by medic: every attempt succeeded".to_string()
                } else {
                    format!(
                        " — {}{}",
                        if deviations.is_empty() {
                            "no failed step".into()
                        } else {
                            format!("steps that did not work: {}", deviations.join(", "))
                        },
                        if escalated {
                            "; the incident was escalated to humans"
                        } else {
                            ""
                        }
                    )
                },
            ),
            "3.1" => (
                false,
                recovered
                    .map(|t| format!(" — by {}", time(t + chrono::Duration::hours(24))))
                    .unwrap_or_default(),
            ),
            "3.2" => (
                false,
                if pages.is_empty() {
                    String::new()
                } else {
                    format!(" — paged via: {}", pages.join(", "))
                },
            ),
            "4.1" => (
                false,
                d.runbook
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
            ),
            "4.3" => (
                false,
                format!(
                    " — detection took {} from the first failure medic saw",
                    human(detected - first_failure)
                ),
            ),
            _ => (false, String::new()),
        }
    };
    // People's ticks (API, Slack) win over medic's guess and say who.
    let ticks = crate::page::checklist::state(&d.timeline);
    md.push_str("## Post-recovery checklist\n");
    for (n, section) in crate::page::checklist::sections().into_iter().enumerate() {
        let _ = writeln!(md, "\n### {}. {section}\n", n + 1);
        for t in ticks.iter().filter(|t| t.section == section) {
            let (medic, note) = auto(t.id);
            let (done, who) = match (&t.by, t.at) {
                (Some(by), Some(at)) => (
                    t.done,
                    format!(
                        " — {} by {} at {}",
                        if t.done { "ticked" } else { "unticked" },
                        md_escape(by),
                        time(at)
                    ),
                ),
                _ => (medic, String::new()),
            };
            let _ = writeln!(md, "- {} {}{note}{who}", tick(done), t.text);
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Attempt, Incident, IncidentState, TimelineEntry};
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::seconds(s)
    }

    #[test]
    fn draft_measures_against_the_rto_and_prefills_the_checklist() {
        let d = IncidentDetail {
            incident: Incident {
                id: 7,
                scenario: "redis-cache-failure".into(),
                instance: String::new(),
                state: IncidentState::Resolved,
                severity: "high".into(),
                summary: "Redis down".into(),
                opened_at: t(0),
                updated_at: t(400),
                resolved_at: Some(t(400)),
                cause: None,
            },
            rto: Some("5m".into()),
            rpo: None,
            runbook: Some("reference/disaster-recovery-plan.md#3".into()),
            timeline: vec![
                TimelineEntry::new(t(0), "state", "opened: redis_down firing"),
                TimelineEntry::new(t(5), "page", "paged level 0 via log")
                    .with_data(json!({"notifier": "log"})),
            ],
            attempts: vec![Attempt {
                id: 1,
                incident_id: 7,
                scenario: "redis-cache-failure".into(),
                instance: String::new(),
                step: "restart".into(),
                step_index: 0,
                action: "exec".into(),
                key: "7:0:1".into(),
                started_at: t(1),
                ended_at: Some(t(30)),
                outcome: Some(AttemptOutcome::Succeeded),
                reason: "redis_down cleared".into(),
                inputs: json!({"args": ["systemctl", "restart", "redis"]}),
            }],
        };
        let md = render(&d, t(1000));
        assert!(md.contains("| mitigation (first verified action) | 2026-03-01 10:00:30.000 UTC | 30s | within (4m 30s to spare) |"), "{md}");
        assert!(md.contains("| recovery (symptoms cleared, resolved) | 2026-03-01 10:06:40.000 UTC | 6m 40s | **missed** by 1m 40s |"), "{md}");
        assert!(md.contains("### restart (`exec`): succeeded"));
        assert!(md.contains("\"systemctl\""));
        assert!(md.contains("- [x] All services operational — medic saw every symptom"));
        assert!(md.contains("- [ ] Include all stakeholders — paged via: log"));
        assert!(md.contains("- [x] Recovery steps logged — 1 attempt(s)"));
        assert!(md.contains("### 4. Improvement Actions"));
        assert!(md.contains("(reference/disaster-recovery-plan.md#3)"));
    }

    /// Items people ticked (API, Slack) show as ticked, by whom and when;
    /// an item unticked by a person stays open even where medic guessed.
    #[test]
    fn people_tick_the_checklist() {
        let d = IncidentDetail {
            incident: Incident {
                id: 8,
                scenario: "s".into(),
                instance: String::new(),
                state: IncidentState::Resolved,
                severity: "high".into(),
                summary: "down".into(),
                opened_at: t(0),
                updated_at: t(60),
                resolved_at: Some(t(60)),
                cause: None,
            },
            rto: Some("5m".into()),
            rpo: None,
            runbook: None,
            timeline: vec![
                TimelineEntry::new(t(100), "checklist", "x")
                    .with_data(json!({"item": "2.2", "done": true, "by": "<@U0ALICE>"})),
                TimelineEntry::new(t(120), "checklist", "x")
                    .with_data(json!({"item": "1.1", "done": false, "by": "bob"})),
            ],
            attempts: Vec::new(),
        };
        let md = render(&d, t(1000));
        assert!(
            md.contains("- [x] Root cause identified — ticked by \\<@U0ALICE\\> at 2026-03-01 10:01:40.000 UTC\n"),
            "{md}"
        );
        assert!(
            md.contains("- [ ] All services operational — medic saw every symptom of s clear at 2026-03-01 10:01:00.000 UTC — unticked by bob at 2026-03-01 10:02:00.000 UTC\n"),
            "{md}"
        );
        assert_eq!(md.matches("- [").count(), 22);
    }

    #[test]
    fn outside_text_cannot_format_link_or_break_the_draft() {
        assert_eq!(
            md_escape("[click](https://evil.example) <img src=x> **b** | c\n# h"),
            "\\[click\\]\\(https\\://evil.example\\) \\<img src=x\\> \\*\\*b\\*\\* \\| c \\# h"
        );
        assert_eq!(md_escape("see www.evil.example"), "see www\\.evil.example");
        assert_eq!(
            md_escape("redis_down: up → failing"),
            "redis\\_down: up → failing"
        );
        assert_eq!(fence("a ```` b"), "`````");
        assert_eq!(fence("plain"), "```");
    }
}
