//! Issue 13's label attacks against the real binary: alerts pushed to
//! medic's Alertmanager intake carry the attacker's label values, and each
//! attack now fails safely: the step is refused on the timeline, nothing
//! runs, humans are paged. The same rules with legitimate values still act.
//! Then the budgets an attacker could multiply by inventing label sets: the
//! scenario-wide `limit` and the blast radius over time, both counted from
//! the store's ledger (a restart of medic resets neither).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Medic, Redis, TEST_INTAKE_TOKEN, block_on, free_port, http_credentials, wait_until};
use medic::server;
use medic::store::{
    Attempt, AttemptOutcome, Incident, IncidentState, SqliteStore, TimelineEntry, prelude::*,
};
use serde_json::{Value, json};

/// `dir/medic.yaml` (enforce mode, SQLite at `dir/medic.db`, the HTTP
/// server on `http`, the config's `targets` block as given) and
/// `dir/rules/r.yaml` = `rule`. The config's blast radius "at one moment"
/// is out of the way (these tests are about the other bounds: every
/// instance they fire is one of those medic has seen).
fn setup(dir: &Path, http: u16, targets: &str, rule: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/r.yaml"), rule).unwrap();
    std::fs::write(
        dir.join("medic.yaml"),
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 5s\n\
             http: {{ listen: \"127.0.0.1:{http}\", {creds} }}\n\
             limits: {{ blast_radius: {{ percent: 100 }} }}\n\
             {targets}",
            creds = http_credentials(dir)
        ),
    )
    .unwrap();
    dir.join("medic.yaml")
}

/// A scenario on the alert `alertname: Broken`, one incident per label
/// set, whose plan is `plan` (YAML list items indented by two) and whose
/// scenario-level fields `extra` (e.g. `limit: ...`) are added.
fn rule(plan: &str, extra: &str) -> String {
    format!(
        "scenario: broken\n\
         summary: something is broken\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 broken:\n\
         \x20   check: {{ alert: Broken }}\n\
         \x20   every: 100ms\n\
         when: {{ any: [broken] }}\n\
         plan:\n{plan}\
         max_acting: 4\n\
         {extra}\
         escalation: default\n"
    )
}

/// Posts one Alertmanager delivery of `status` alerts named `Broken`, one
/// per label set in `labels`.
fn post(http: u16, status: &str, labels: &[Value]) {
    let alerts: Vec<Value> = labels
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l["alertname"] = json!("Broken");
            json!({
                "status": status,
                "labels": l,
                "annotations": {},
                "startsAt": "2026-03-01T00:00:00Z",
                "endsAt": if status == "resolved" { "2026-03-01T00:05:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": ""
            })
        })
        .collect();
    let body = json!({
        "version": "4", "status": status, "receiver": "medic", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts
    });
    let url = format!("http://127.0.0.1:{http}{}", server::alertmanager::PATH);
    let code = block_on(async {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .bearer_auth(TEST_INTAKE_TOKEN)
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(code, 200, "delivery refused");
}

/// What the store holds: every incident (newest first) with its timeline
/// (as "kind: message") and its attempts.
struct Seen {
    incidents: Vec<(Incident, Vec<String>, Vec<Attempt>)>,
    /// Outbox entries (notifier, kind) over all incidents.
    pages: Vec<(String, String)>,
}

fn seen(db: &Path) -> Seen {
    block_on(async {
        let s = SqliteStore::open(db).await.unwrap();
        let mut incidents = Vec::new();
        let mut pages = Vec::new();
        for i in s.recent_incidents(100).await.unwrap() {
            let tl: Vec<String> = s
                .timeline(i.id)
                .await
                .unwrap()
                .into_iter()
                .map(|e: TimelineEntry| format!("{}: {}", e.kind, e.message))
                .collect();
            let attempts = s.incident_attempts(i.id).await.unwrap();
            for o in s.outbox_of(i.id).await.unwrap() {
                pages.push((o.notifier, o.kind));
            }
            incidents.push((i, tl, attempts));
        }
        Seen { incidents, pages }
    })
}

impl Seen {
    /// The incident whose instance contains `needle`.
    fn of(&self, needle: &str) -> Option<&(Incident, Vec<String>, Vec<Attempt>)> {
        self.incidents
            .iter()
            .find(|(i, _, _)| i.instance.contains(needle))
    }

    fn escalated_with(&self, needle: &str, refusal: &str) -> bool {
        self.of(needle).is_some_and(|(i, tl, attempts)| {
            i.state == IncidentState::Escalated
                && tl.iter().any(|m| m.contains(refusal))
                && tl
                    .iter()
                    .any(|m| m.starts_with("escalate: escalated: refused"))
                && attempts
                    .iter()
                    .all(|a| a.outcome == Some(AttemptOutcome::Refused))
        })
    }

    /// Attempts over every incident that executed something.
    fn acted(&self) -> usize {
        self.incidents
            .iter()
            .flat_map(|(_, _, a)| a)
            .filter(|a| a.outcome.is_some_and(|o| o.counts_against_limit()))
            .count()
    }
}

/// A stand-in program at `dir/NAME` that appends its argv to `dir/NAME.argv`.
fn recorder(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n",
            dir.join(format!("{name}.argv")).display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn recorded(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.argv"))).unwrap_or_default()
}

const WAIT: Duration = Duration::from_secs(20);

/// The issue's argv attack: an `exec` argument from a label became
/// `--config=/etc/evil.conf`. Now the step is refused (label-value gate),
/// on the timeline, the incident escalates and pages; the program never
/// starts. A legitimate service name still reaches the program.
#[test]
fn an_option_as_a_label_value_never_reaches_an_exec_argv() {
    let dir = tempfile::tempdir().unwrap();
    let tool = recorder(dir.path(), "tool");
    let http = free_port();
    let plan = format!(
        "\x20 - name: reload\n\
         \x20   action: exec\n\
         \x20   args: [\"{}\", reload, \"${{labels.service}}\"]\n\
         \x20   verify: {{ within: 300ms }}\n\
         \x20   limit: {{ attempts: 1, per: 1h }}\n",
        tool.display()
    );
    let config = setup(dir.path(), http, "", &rule(&plan, ""));
    let db = dir.path().join("medic.db");
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));

    post(
        http,
        "firing",
        &[json!({ "service": "--config=/etc/evil.conf" })],
    );
    wait_until(WAIT, "the hostile incident to escalate", || {
        seen(&db).escalated_with(
            "evil",
            r#"gate label-value refused: label "service" = "--config=/etc/evil.conf" refused as an exec argument"#,
        )
    });
    assert_eq!(recorded(dir.path(), "tool"), "", "the program ran");

    post(http, "firing", &[json!({ "service": "api" })]);
    wait_until(WAIT, "the legitimate step to run", || {
        recorded(dir.path(), "tool") == "reload api\n"
    });
    assert!(medic.stop().success());
    let s = seen(&db);
    assert!(
        s.pages.iter().any(|(n, k)| n == "log" && k == "page"),
        "nobody paged: {:?}",
        s.pages
    );
    let (_, _, attempts) = s.of("api").unwrap();
    assert_eq!(
        attempts[0].inputs["params"]["args"][2], "api",
        "{attempts:#?}"
    );
}

/// The issue's Redis attack: `tenant:${labels.tenant}:*` with `tenant="*"`
/// deleted every tenant's keys. Against a real Redis: refused, every key
/// still there; a real tenant's flush deletes that tenant's keys only.
#[test]
fn a_glob_as_a_tenant_deletes_nothing_and_a_real_tenant_only_its_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_free();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port)).unwrap();
    let mut conn = client.get_connection().unwrap();
    for k in [
        "tenant:acme:1",
        "tenant:acme:2",
        "tenant:globex:1",
        "tenant:initech:1",
    ] {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut conn).unwrap();
    }
    let http = free_port();
    let plan = "\x20 - name: flush-tenant\n\
                \x20   action: redis.flush\n\
                \x20   target: cache\n\
                \x20   pattern: \"tenant:${labels.tenant}:*\"\n\
                \x20   verify: { within: 300ms }\n\
                \x20   limit: { attempts: 1, per: 1h }\n";
    let targets = format!(
        "targets:\n  cache: {{ redis: {{ address: \"127.0.0.1:{}\" }} }}\n",
        redis.port
    );
    let config = setup(dir.path(), http, &targets, &rule(plan, ""));
    let db = dir.path().join("medic.db");
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    let keys = |conn: &mut redis::Connection| {
        let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
        k.sort();
        k
    };

    post(http, "firing", &[json!({ "tenant": "*" })]);
    wait_until(WAIT, "the hostile incident to escalate", || {
        seen(&db).escalated_with(
            r#"tenant="*""#,
            r#"label "tenant" = "*" refused as a redis.flush pattern"#,
        )
    });
    assert_eq!(keys(&mut conn).len(), 4, "keys were deleted");

    post(http, "firing", &[json!({ "tenant": "acme" })]);
    wait_until(WAIT, "acme's flush to run", || {
        seen(&db).of("acme").is_some_and(|(_, tl, _)| {
            tl.iter()
                .any(|m| m.contains(r#"deleted 2 keys matching "tenant:acme:*""#))
        })
    });
    assert!(medic.stop().success());
    assert_eq!(keys(&mut conn), ["tenant:globex:1", "tenant:initech:1"]);
}

/// The issue's systemd attack: a unit from a label became `*.service`
/// (systemctl restarts every unit a glob matches). Refused; a real unit
/// name is restarted. `systemctl` is a recorder on medic's PATH.
#[test]
fn a_glob_as_a_unit_restarts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    recorder(&bin, "systemctl");
    let http = free_port();
    let plan = "\x20 - name: restart-unit\n\
                \x20   action: systemd-restart\n\
                \x20   unit: \"${labels.unit}\"\n\
                \x20   verify: { within: 300ms }\n\
                \x20   limit: { attempts: 1, per: 1h }\n";
    let config = setup(dir.path(), http, "", &rule(plan, ""));
    let db = dir.path().join("medic.db");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut medic =
        Medic::start_with_env(&config, &dir.path().join("medic.log"), &[("PATH", path)]);

    post(http, "firing", &[json!({ "unit": "*.service" })]);
    wait_until(WAIT, "the hostile incident to escalate", || {
        seen(&db).escalated_with(
            r#"unit="*.service""#,
            r#"label "unit" = "*.service" refused as a systemd unit"#,
        )
    });
    assert_eq!(recorded(&bin, "systemctl"), "", "systemctl ran");

    post(http, "firing", &[json!({ "unit": "nginx.service" })]);
    wait_until(WAIT, "the legitimate restart", || {
        recorded(&bin, "systemctl") == "restart nginx.service\n"
    });
    assert!(medic.stop().success());
}

/// Each new label set used to get a fresh attempt budget. With the
/// scenario's `limit: { attempts: 3 }`, six made-up instances get three
/// attempts between them; the rest are refused and page. After a restart
/// a seventh still gets nothing: the budget is read from the ledger.
#[test]
fn new_label_sets_do_not_buy_new_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let tool = recorder(dir.path(), "tool");
    let http = free_port();
    let plan = format!(
        "\x20 - name: poke\n\
         \x20   action: exec\n\
         \x20   args: [\"{}\", \"${{labels.instance}}\"]\n\
         \x20   verify: {{ within: 300ms }}\n\
         \x20   limit: {{ attempts: 1, per: 1h }}\n",
        tool.display()
    );
    let extra = "limit: { attempts: 3, per: 1h }\nblast_radius: { instances: 100, per: 1h }\n";
    let config = setup(dir.path(), http, "", &rule(&plan, extra));
    let db = dir.path().join("medic.db");
    // One log per run: Medic::start waits for "medic running" in it.
    let log = |run: u32| dir.path().join(format!("medic-{run}.log"));
    let mut medic = Medic::start(&config, &log(1));

    let instances: Vec<Value> = (1..=6)
        .map(|i| json!({ "instance": format!("app-{i}") }))
        .collect();
    post(http, "firing", &instances);
    wait_until(WAIT, "six incidents to escalate", || {
        let s = seen(&db);
        s.incidents.len() == 6
            && s.incidents
                .iter()
                .all(|(i, _, _)| i.state == IncidentState::Escalated)
    });
    let s = seen(&db);
    assert_eq!(s.acted(), 3, "attempts that ran");
    let refused: Vec<_> = s
        .incidents
        .iter()
        .filter(|(_, tl, _)| {
            tl.iter().any(|m| {
                m.contains("refused: scenario-limit: 3 of 3 attempts per 1h used by this scenario (over 3 instance(s))")
            })
        })
        .collect();
    assert_eq!(refused.len(), 3, "{:#?}", s.incidents);
    assert_eq!(recorded(dir.path(), "tool").lines().count(), 3);
    assert!(medic.stop().success());

    let mut medic = Medic::start(&config, &log(2));
    post(http, "firing", &[json!({ "instance": "app-7" })]);
    wait_until(WAIT, "the seventh to be refused", || {
        seen(&db).escalated_with("app-7", "refused: scenario-limit: 3 of 3 attempts")
    });
    assert!(medic.stop().success());
    assert_eq!(recorded(dir.path(), "tool").lines().count(), 3);
}

/// The blast radius used to count only instances failing at the same
/// moment: one alert at a time slipped past it. Now at most
/// `blast_radius.instances` distinct instances are acted on per window,
/// however they arrive, across a restart of medic.
#[test]
fn one_alert_at_a_time_does_not_slip_past_the_blast_radius() {
    let dir = tempfile::tempdir().unwrap();
    let tool = recorder(dir.path(), "tool");
    let http = free_port();
    let plan = format!(
        "\x20 - name: poke\n\
         \x20   action: exec\n\
         \x20   args: [\"{}\", \"${{labels.instance}}\"]\n\
         \x20   verify: {{ within: 5s }}\n\
         \x20   limit: {{ attempts: 1, per: 1h }}\n",
        tool.display()
    );
    let extra = "blast_radius: { instances: 2, per: 10m }\n";
    let config = setup(dir.path(), http, "", &rule(&plan, extra));
    let db = dir.path().join("medic.db");
    // One log per run: Medic::start waits for "medic running" in it.
    let log = |run: u32| dir.path().join(format!("medic-{run}.log"));
    let mut medic = Medic::start(&config, &log(1));

    // One at a time: each fires, is acted on, and resolves.
    for (n, name) in ["app-a", "app-b"].into_iter().enumerate() {
        let l = json!({ "instance": name });
        post(http, "firing", std::slice::from_ref(&l));
        wait_until(WAIT, "the step to run", || {
            recorded(dir.path(), "tool").lines().count() == n + 1
        });
        post(http, "resolved", &[l]);
        wait_until(WAIT, "the incident to resolve", || {
            seen(&db)
                .of(name)
                .is_some_and(|(i, _, _)| i.state == IncidentState::Resolved)
        });
        if n == 0 {
            assert!(medic.stop().success());
            medic = Medic::start(&config, &log(2));
        }
    }
    post(http, "firing", &[json!({ "instance": "app-c" })]);
    wait_until(WAIT, "the third instance to be refused", || {
        seen(&db).escalated_with(
            "app-c",
            "refused: blast-radius-window: blast radius over time: 2 of at most 2 distinct instances acted on in the last 10m",
        )
    });
    assert!(medic.stop().success());
    assert_eq!(recorded(dir.path(), "tool"), "app-a\napp-b\n");
}

/// `medic check` (the real binary) refuses `${labels.NAME}` where it would
/// not expand, and a glob in a unit, each at its file:line:col.
#[test]
fn medic_check_refuses_labels_where_they_cannot_go() {
    let dir = tempfile::tempdir().unwrap();
    let plan = "\x20 - action: redis.flush\n\
                \x20   target: \"${labels.target}\"\n\
                \x20 - action: systemd-restart\n\
                \x20   unit: \"app-${labels.x}*.service\"\n";
    let config = setup(dir.path(), free_port(), "", &rule(plan, ""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("rules/r.yaml");
    for want in [
        format!(
            "{}:12:13: `target` does not expand `${{labels.NAME}}` (redis.flush expands only pattern)",
            file.display()
        ),
        format!(
            "{}:14:11: not a unit name: \"app-${{labels.x}}*.service\" has the glob character '*'",
            file.display()
        ),
    ] {
        assert!(stderr.contains(&want), "{want}\nnot in:\n{stderr}");
    }
}
