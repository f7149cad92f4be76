//! The incident's swimlane: its stored timeline and attempts drawn as one
//! inline SVG over time. One lane per symptom (its phases, from the
//! `symptom` entries and the opening `state` entry), one for the steps
//! (each attempt a bar from start to end, coloured by outcome), one for
//! pages, notices and decisions (marks), and a vertical line at the
//! scenario's RTO counted from detection (the incident's opening).
//!
//! Pure: it reads what [`crate::store`] holds and returns text, so it is
//! tested without a server. Every word from outside is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::store::{Attempt, Incident, TimelineEntry};

use super::super::status::esc;

/// The drawing's width and the lanes' geometry, in SVG user units.
pub const WIDTH: f64 = 960.0;
/// Left margin: the lanes' names.
pub const LEFT: f64 = 170.0;
/// Right margin.
pub const RIGHT: f64 = 20.0;
const LANE: f64 = 34.0;
const TOP: f64 = 24.0;

/// What the drawing needs: the incident, its timeline and attempts, the
/// scenario's RTO (when its rules are loaded) and now (the right edge of an
/// open incident).
pub struct Input<'a> {
    pub incident: &'a Incident,
    pub timeline: &'a [TimelineEntry],
    pub attempts: &'a [Attempt],
    pub rto: Option<std::time::Duration>,
    pub now: DateTime<Utc>,
}

/// The time axis: `t0` at [`LEFT`], `t1` at `WIDTH - RIGHT`, linear.
#[derive(Clone, Copy, Debug)]
pub struct Axis {
    pub t0: DateTime<Utc>,
    pub t1: DateTime<Utc>,
}

impl Axis {
    /// The x of `t`, proportional to its time since `t0` (clamped to the
    /// drawing).
    pub fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.t1 - self.t0).num_milliseconds().max(1) as f64;
        let f = ((t - self.t0).num_milliseconds() as f64 / span).clamp(0.0, 1.0);
        LEFT + f * (WIDTH - LEFT - RIGHT)
    }
}

/// A lane's segment: a phase (or an outcome) over `[from, to)`.
struct Segment {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    class: String,
    title: String,
}

/// A mark at one instant.
struct Mark {
    at: DateTime<Utc>,
    class: &'static str,
    title: String,
}

/// The colour of a phase or an outcome.
fn fill(class: &str) -> &'static str {
    match class {
        "ok" | "succeeded" => "#4a4",
        "pending" => "#e0b000",
        "firing" | "failed" | "timed_out" => "#d33",
        "clearing" => "#8c6",
        "refused" | "abandoned" => "#999",
        "dry_run" => "#69c",
        "in_flight" => "#6af",
        _ => "#bbb",
    }
}

/// The SVG, as text to put inside an HTML page.
pub fn render(input: &Input) -> String {
    let inc = input.incident;
    let end = inc.resolved_at.unwrap_or(input.now);
    let mut t1 = end;
    for e in input.timeline {
        t1 = t1.max(e.at);
    }
    for a in input.attempts {
        t1 = t1.max(a.ended_at.unwrap_or(a.started_at));
    }
    let t0 = input
        .timeline
        .iter()
        .map(|e| e.at)
        .chain(std::iter::once(inc.opened_at))
        .min()
        .unwrap_or(inc.opened_at);
    if t1 <= t0 {
        t1 = t0 + chrono::Duration::seconds(1);
    }
    // The RTO line is in the drawing unless it lies far beyond what
    // happened (then the drawing says where it is instead).
    let rto_at = input
        .rto
        .filter(|r| !r.is_zero())
        .and_then(|r| chrono::Duration::from_std(r).ok())
        .map(|r| inc.opened_at + r);
    let mut rto_off = None;
    if let Some(r) = rto_at.filter(|r| *r > t1) {
        if (r - t0) <= (t1 - t0) * 4 {
            t1 = r + (r - t0) / 20;
        } else {
            rto_off = Some(r);
        }
    }
    let axis = Axis { t0, t1 };

    // Symptom lanes: the phase each was in, in order of first mention.
    let mut order: Vec<String> = Vec::new();
    let mut changes: BTreeMap<String, Vec<(DateTime<Utc>, String, String)>> = BTreeMap::new();
    let mut unseen: BTreeMap<String, Vec<Mark>> = BTreeMap::new();
    for e in input.timeline {
        if e.kind == "state"
            && let Some(m) = e.data.get("symptoms").and_then(|s| s.as_object())
        {
            for (name, v) in m {
                let phase = v.get("phase").and_then(|p| p.as_str()).unwrap_or("unknown");
                if !order.contains(name) {
                    order.push(name.clone());
                }
                let list = changes.entry(name.clone()).or_default();
                if list.is_empty() {
                    list.push((e.at, phase.to_string(), e.message.clone()));
                }
            }
        }
        if e.kind == "symptom"
            && let Some(name) = e.data.get("symptom").and_then(|s| s.as_str())
        {
            if !order.iter().any(|n| n == name) {
                order.push(name.to_string());
            }
            match e.data.get("to").and_then(|t| t.as_str()) {
                Some(to) => changes.entry(name.to_string()).or_default().push((
                    e.at,
                    to.to_string(),
                    e.message.clone(),
                )),
                None => unseen.entry(name.to_string()).or_default().push(Mark {
                    at: e.at,
                    class: "unknown",
                    title: e.message.clone(),
                }),
            }
        }
    }
    let mut lanes: Vec<(String, Vec<Segment>, Vec<Mark>)> = Vec::new();
    for name in &order {
        let list = changes.remove(name).unwrap_or_default();
        let mut segs = Vec::new();
        for (i, (at, phase, why)) in list.iter().enumerate() {
            let to = list.get(i + 1).map_or(end.max(*at), |n| n.0);
            segs.push(Segment {
                from: *at,
                to,
                class: phase.clone(),
                title: format!("{phase}: {why}"),
            });
        }
        lanes.push((
            format!("symptom {name}"),
            segs,
            unseen.remove(name).unwrap_or_default(),
        ));
    }

    // The steps lane: each attempt from start to end (now while in flight).
    let steps: Vec<Segment> = input
        .attempts
        .iter()
        .map(|a| {
            let outcome = a.outcome.map_or("in_flight", |o| o.as_str());
            Segment {
                from: a.started_at,
                to: a.ended_at.unwrap_or(input.now).max(a.started_at),
                class: outcome.to_string(),
                title: format!(
                    "step {} ({}): {outcome}{}",
                    a.step,
                    a.action,
                    if a.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", a.reason)
                    }
                ),
            }
        })
        .collect();
    let step_marks: Vec<Mark> = input
        .timeline
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "step" | "verify" | "guard" | "wait"))
        .map(|e| Mark {
            at: e.at,
            class: "step",
            title: e.message.clone(),
        })
        .collect();
    lanes.push(("steps".into(), steps, step_marks));

    // Pages, notices, approvals asked and decisions.
    let people: Vec<Mark> = input
        .timeline
        .iter()
        .filter_map(|e| {
            let class = match e.kind.as_str() {
                "page" | "notice" | "escalate" => "page",
                "approval" => "approval",
                "decision" => "decision",
                _ => return None,
            };
            Some(Mark {
                at: e.at,
                class,
                title: e.message.clone(),
            })
        })
        .collect();
    lanes.push(("pages &amp; decisions".into(), Vec::new(), people));

    let height = TOP + LANE * lanes.len() as f64 + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"swimlane\" id=\"swimlane\" \
         viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" \
         role=\"img\" aria-label=\"incident {} over time\" font-family=\"system-ui,sans-serif\" font-size=\"11\">",
        inc.id
    );
    let _ = write!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#fff\"/>"
    );
    for (i, (name, segs, marks)) in lanes.iter().enumerate() {
        let y = TOP + LANE * i as f64;
        // The steps and people lanes name themselves; symptom names are
        // outside text.
        let label = if name.starts_with("symptom ") {
            esc(name)
        } else {
            name.clone()
        };
        let _ = write!(
            s,
            "<g class=\"lane\" data-lane=\"{i}\"><rect x=\"{LEFT}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"#f3f3f3\"/>\
             <text x=\"6\" y=\"{}\">{label}</text>",
            WIDTH - LEFT - RIGHT,
            LANE - 8.0,
            y + LANE / 2.0,
        );
        for g in segs {
            let (x0, x1) = (axis.x(g.from), axis.x(g.to));
            let _ = write!(
                s,
                "<rect class=\"seg {c}\" x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\" stroke=\"#fff\"><title>{}</title></rect>",
                y + 3.0,
                (x1 - x0).max(2.0),
                LANE - 14.0,
                fill(&g.class),
                esc(&g.title),
                c = esc(&g.class),
            );
        }
        for m in marks {
            let x = axis.x(m.at);
            let colour = match m.class {
                "decision" => "#2a6",
                "approval" => "#c80",
                "page" => "#36c",
                "unknown" => "#777",
                _ => "#333",
            };
            let _ = write!(
                s,
                "<circle class=\"mark {}\" cx=\"{x:.1}\" cy=\"{}\" r=\"5\" fill=\"{colour}\" stroke=\"#fff\"><title>{}</title></circle>",
                m.class,
                y + (LANE - 8.0) / 2.0,
                esc(&m.title),
            );
        }
        s.push_str("</g>");
    }
    // The time axis: five ticks, as time since t0.
    let base = TOP + LANE * lanes.len() as f64;
    for k in 0..=4 {
        let t = t0 + (t1 - t0) * k / 4;
        let x = axis.x(t);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">+{}</text>",
            base,
            base + 14.0,
            tick(t - t0, t1 - t0),
        );
    }
    if let Some(r) = rto_at.filter(|_| rto_off.is_none()) {
        let x = axis.x(r);
        let _ = write!(
            s,
            "<line class=\"rto\" x1=\"{x:.1}\" y1=\"6\" x2=\"{x:.1}\" y2=\"{base}\" stroke=\"#c00\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\
             <text x=\"{x:.1}\" y=\"14\" fill=\"#c00\" text-anchor=\"middle\">RTO</text>"
        );
    }
    if let Some(r) = rto_off {
        let _ = write!(
            s,
            "<text class=\"rto-off\" x=\"{}\" y=\"14\" fill=\"#c00\" text-anchor=\"end\">RTO at +{} (beyond the right edge) →</text>",
            WIDTH - RIGHT,
            super::super::status::human(r - t0),
        );
    }
    s.push_str("</svg>");
    s
}

/// A tick's label: time since the start, to the tenth of a second when
/// the whole axis spans less than 10 s (whole seconds would label two
/// ticks `+0s`).
fn tick(since: chrono::Duration, span: chrono::Duration) -> String {
    if span < chrono::Duration::seconds(10) {
        format!("{:.1}s", since.num_milliseconds() as f64 / 1000.0)
    } else {
        super::super::status::human(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AttemptOutcome, IncidentState};
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn incident(resolved: Option<i64>) -> Incident {
        Incident {
            id: 7,
            scenario: "db".into(),
            instance: String::new(),
            state: IncidentState::Open,
            severity: "critical".into(),
            summary: "s".into(),
            opened_at: at(0),
            updated_at: at(0),
            resolved_at: resolved.map(at),
            cause: None,
        }
    }

    fn attempt(step: &str, from: i64, to: i64, outcome: AttemptOutcome) -> Attempt {
        Attempt {
            id: 1,
            incident_id: 7,
            scenario: "db".into(),
            instance: String::new(),
            step: step.into(),
            step_index: 0,
            action: "exec".into(),
            key: String::new(),
            started_at: at(from),
            ended_at: Some(at(to)),
            outcome: Some(outcome),
            reason: "exit 0".into(),
            inputs: json!({}),
        }
    }

    fn timeline() -> Vec<TimelineEntry> {
        vec![
            TimelineEntry::new(at(0), "state", "opened: down firing").with_data(
                json!({"symptoms": {"down": {"phase": "firing"}, "lag": {"phase": "pending"}}}),
            ),
            TimelineEntry::new(at(10), "page", "paged level 0 via log"),
            TimelineEntry::new(at(40), "decision", "acknowledged by ann")
                .with_data(json!({"decision": "acknowledge"})),
            TimelineEntry::new(at(60), "symptom", "symptom down: firing → clearing (ok)")
                .with_data(json!({"symptom": "down", "from": "firing", "to": "clearing"})),
        ]
    }

    #[test]
    fn one_lane_per_symptom_then_steps_then_people() {
        let inc = incident(Some(100));
        let attempts = [attempt("restart", 20, 30, AttemptOutcome::Succeeded)];
        let svg = render(&Input {
            incident: &inc,
            timeline: &timeline(),
            attempts: &attempts,
            rto: None,
            now: at(500),
        });
        assert_eq!(svg.matches("<g class=\"lane\"").count(), 4, "{svg}");
        let down = svg.find(">symptom down<").unwrap();
        let lag = svg.find(">symptom lag<").unwrap();
        let steps = svg.find(">steps<").unwrap();
        let people = svg.find(">pages &amp; decisions<").unwrap();
        assert!(down < lag && lag < steps && steps < people, "{svg}");
        // down: firing then clearing; the step succeeded; a page and an ack.
        assert_eq!(svg.matches("class=\"seg firing\"").count(), 1);
        assert_eq!(svg.matches("class=\"seg clearing\"").count(), 1);
        assert_eq!(svg.matches("class=\"seg succeeded\"").count(), 1);
        assert_eq!(svg.matches("class=\"mark page\"").count(), 1);
        assert_eq!(svg.matches("class=\"mark decision\"").count(), 1);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
    }

    #[test]
    fn x_is_proportional_to_time() {
        let axis = Axis {
            t0: at(0),
            t1: at(100),
        };
        let w = WIDTH - LEFT - RIGHT;
        assert_eq!(axis.x(at(0)), LEFT);
        assert_eq!(axis.x(at(100)), LEFT + w);
        assert!((axis.x(at(25)) - (LEFT + w / 4.0)).abs() < 1e-9);
        assert!((axis.x(at(50)) - (LEFT + w / 2.0)).abs() < 1e-9);
        // Outside the span: at the edges.
        assert_eq!(axis.x(at(-5)), LEFT);
        assert_eq!(axis.x(at(500)), LEFT + w);

        // In the drawing: an attempt from 50 s to 75 s of a 100 s
        // incident starts half way and is a quarter wide.
        let inc = incident(Some(100));
        let attempts = [attempt("restart", 50, 75, AttemptOutcome::Failed)];
        let svg = render(&Input {
            incident: &inc,
            timeline: &[],
            attempts: &attempts,
            rto: None,
            now: at(100),
        });
        let want = format!(
            "class=\"seg failed\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\"",
            LEFT + w / 2.0,
            TOP + 3.0,
            w / 4.0
        );
        assert!(svg.contains(&want), "{want} in {svg}");
    }

    #[test]
    fn the_rto_line_is_at_the_rto_from_detection() {
        let inc = incident(Some(100));
        // RTO 50 s: half way along a 100 s incident.
        let svg = render(&Input {
            incident: &inc,
            timeline: &timeline(),
            attempts: &[],
            rto: Some(std::time::Duration::from_secs(50)),
            now: at(500),
        });
        let w = WIDTH - LEFT - RIGHT;
        assert!(
            svg.contains(&format!("class=\"rto\" x1=\"{:.1}\"", LEFT + w / 2.0)),
            "{svg}"
        );
        // An RTO past the end widens the axis to show it.
        let svg = render(&Input {
            incident: &inc,
            timeline: &[],
            attempts: &[],
            rto: Some(std::time::Duration::from_secs(200)),
            now: at(500),
        });
        assert!(svg.contains("class=\"rto\""), "{svg}");
        // One far beyond is named at the edge instead of squashing the rest.
        let svg = render(&Input {
            incident: &inc,
            timeline: &[],
            attempts: &[],
            rto: Some(std::time::Duration::from_secs(3600)),
            now: at(500),
        });
        assert!(!svg.contains("class=\"rto\""), "{svg}");
        assert!(svg.contains("RTO at +1h"), "{svg}");
    }

    #[test]
    fn outside_text_is_escaped_inside_the_svg() {
        let inc = incident(None);
        let evil = "<script>alert(1)</script>\"&'";
        let timeline = vec![
            TimelineEntry::new(at(0), "state", format!("opened: {evil}"))
                .with_data(json!({"symptoms": {evil: {"phase": "firing"}}})),
            TimelineEntry::new(at(5), "decision", format!("acknowledged by {evil}")),
        ];
        let mut a = attempt(evil, 1, 2, AttemptOutcome::Failed);
        a.reason = evil.into();
        let svg = render(&Input {
            incident: &inc,
            timeline: &timeline,
            attempts: &[a],
            rto: None,
            now: at(10),
        });
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains(evil), "{svg}");
        assert!(
            svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;&#39;"),
            "{svg}"
        );
    }

    #[test]
    fn ticks_of_a_short_axis_are_tenths_and_distinct() {
        let span = chrono::Duration::milliseconds(3_000);
        let labels: Vec<String> = (0..=4).map(|k| tick(span * k / 4, span)).collect();
        assert_eq!(labels, ["0.0s", "0.8s", "1.5s", "2.2s", "3.0s"]);
        let long = chrono::Duration::seconds(600);
        assert_eq!(
            tick(long / 2, long),
            super::super::super::status::human(long / 2)
        );
    }
}
