//! The `docker` check and the `docker.restart` / `docker.recreate` actions
//! against a real Docker Engine the test starts (a private dockerd, see
//! `common/docker.rs`), with images imported from busybox and containers
//! on the host's network serving 127.0.0.1 only:
//! - a container whose process is killed is failing until
//!   `docker.restart` brings it back, verified running and healthy; once
//!   the Engine is gone the check is unknown, never failing, and the
//!   target's `source` check (the Engine's `/_ping`) is failing;
//! - a container its restart policy brought back counts its restarts
//!   (`max_restarts`, with and without a `window`);
//! - a Compose service is every container with its labels (one-off `run`
//!   containers and other services aside), restarted together;
//! - a broken new tag (its command exits) is rolled back by
//!   `docker.recreate` to the previous image, keeping the container's
//!   environment, labels, healthcheck and network mode.

mod common;

use std::time::Duration;

use common::docker::{BUSYBOX, Dockerd};
use common::free_port;
use common::prom::http_get;
use medic::check::Check;
use medic::check::docker::{DockerCheck, DockerParams};
use medic::check::source::{SourceCheck, SourceParams};
use medic::observe::Outcome;
use medic::remedy::docker::{
    DockerRecreate, DockerRecreateParams, DockerRestart, DockerRestartParams,
};
use medic::remedy::{Action, ActionContext};

/// The image's command: busybox httpd serving `/www` on 127.0.0.1:$PORT.
fn serve_cmd() -> String {
    format!("CMD [\"/bin/sh\", \"-c\", \"exec {BUSYBOX} httpd -f -p 127.0.0.1:$PORT -h /www\"]")
}

fn config(d: &Dockerd, name: &str, selects: &str) -> medic::config::Config {
    medic::config::load_str(
        "medic.yaml",
        &format!(
            "targets:\n  {name}:\n    docker: {{ socket: \"{}\", {selects}, stop_timeout: 1s }}\n",
            d.socket_str()
        ),
    )
    .unwrap()
}

fn check(target: &str, config: &medic::config::Config) -> DockerCheck {
    DockerCheck::build(
        &DockerParams {
            target: target.into(),
            max_restarts: None,
            window: None,
        },
        Duration::from_secs(5),
        config,
    )
    .unwrap()
}

fn ctx(timeout_s: u64) -> ActionContext {
    ActionContext::new("docker-test-attempt-1", Duration::from_secs(timeout_s))
}

/// Runs `check` until it says what `want` accepts, for at most `limit`;
/// the last outcome.
async fn until(check: &DockerCheck, limit: Duration, want: impl Fn(&Outcome) -> bool) -> Outcome {
    let start = tokio::time::Instant::now();
    loop {
        let o = check.run().await;
        if want(&o) || start.elapsed() > limit {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The host PID of a container's first process.
async fn pid_of(d: &Dockerd, name: &str) -> i32 {
    let c = d
        .client()
        .await
        .inspect_container(name, None)
        .await
        .unwrap();
    c.state.and_then(|s| s.pid).unwrap() as i32
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_container_is_failing_until_docker_restart_brings_it_back() {
    let d = Dockerd::start();
    let port = free_port();
    d.import("medic-test/web", "v1", &[&serve_cmd()]).await;
    d.run(
        "web",
        "medic-test/web:v1",
        &[],
        &[&format!("PORT={port}")],
        Some(port),
    )
    .await;
    let config = config(&d, "web", "container: web");
    let web = check("web", &config);
    let o = until(&web, Duration::from_secs(30), |o| *o == Outcome::Ok).await;
    assert_eq!(o, Outcome::Ok, "web never became healthy\n{}", d.log());

    kill9(pid_of(&d, "web").await);
    let o = until(&web, Duration::from_secs(30), Outcome::is_failing).await;
    assert_eq!(
        o,
        Outcome::Failing("container web: web is exited (exit code 137)".into())
    );
    assert_eq!(http_get(port, "/", false), None, "nothing serves any more");

    let restart = DockerRestart::build(
        &DockerRestartParams {
            target: "web".into(),
        },
        &config,
    )
    .unwrap();
    let pre = restart.preflight(&ctx(30)).await;
    assert_eq!(pre.refusal(), None, "{pre:?}");
    assert_eq!(pre.gates[1].detail, "web");
    let r = restart.run(&ctx(30)).await;
    assert!(r.ok, "{r:?}\n{}", d.log());
    assert_eq!(r.detail, "restarted web: running again");
    assert_eq!(r.data["verified"][0]["name"], "web");
    // Verified healthy: the check agrees at once, and the service answers.
    assert_eq!(web.run().await, Outcome::Ok);
    assert_eq!(
        http_get(port, "/", false),
        Some((200, "medic-test/web:v1\n".into()))
    );
    let again = restart.reconcile(&ctx(30)).await.expect("in place");
    assert!(again.ok, "{again:?}");

    // The `source` check of the same target: the Engine answers `/_ping`.
    let source = SourceCheck::build(
        &SourceParams {
            target: "web".into(),
        },
        Duration::from_secs(5),
        &config,
    )
    .unwrap();
    assert_eq!(source.run().await, Outcome::Ok);

    // The Engine gone is medic's blindness, not a failing container; the
    // `source` check is the one place where it is failing (and pages).
    let socket = d.socket_str().to_string();
    drop(d);
    let o = web.run().await;
    assert_eq!(o.label(), "unknown", "{o:?}");
    assert!(o.detail().contains("is unreachable"), "{o:?}");
    let o = source.run().await;
    assert!(o.is_failing(), "{o:?}");
    assert!(
        o.detail().starts_with(&format!(
            "medic is blind: target web: the Docker Engine at {socket} is unreachable"
        )),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_by_the_restart_policy_count_against_max_restarts() {
    let d = Dockerd::start();
    let port = free_port();
    d.import("medic-test/web", "v1", &[&serve_cmd()]).await;
    d.run_with_policy(
        "flaky",
        "medic-test/web:v1",
        &[],
        &[&format!("PORT={port}")],
        Some(port),
        Some("always"),
    )
    .await;
    let config = config(&d, "flaky", "container: flaky");
    let limited = |window: Option<&str>| {
        DockerCheck::build(
            &DockerParams {
                target: "flaky".into(),
                max_restarts: Some(0),
                window: window.map(|w| w.parse().unwrap()),
            },
            Duration::from_secs(5),
            &config,
        )
        .unwrap()
    };
    let (ever, lately) = (limited(None), limited(Some("10m")));
    let o = until(&ever, Duration::from_secs(30), |o| *o == Outcome::Ok).await;
    assert_eq!(o, Outcome::Ok, "{}", d.log());
    assert_eq!(lately.run().await, Outcome::Ok);

    // Killed: Docker starts it again by itself (restarting, then health
    // starting, then healthy), and counts.
    kill9(pid_of(&d, "flaky").await);
    let counted = |o: &Outcome| o.detail().contains(" restarted ");
    let o = until(&ever, Duration::from_secs(30), counted).await;
    assert_eq!(
        o,
        Outcome::Failing(
            "container flaky: flaky restarted 1 times since it was created (limit 0)".into()
        )
    );
    // Created inside the window: every restart it had counts.
    let o = until(&lately, Duration::from_secs(30), counted).await;
    assert_eq!(
        o,
        Outcome::Failing("container flaky: flaky restarted 1 times in 10m (limit 0)".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_service_is_every_container_with_its_labels() {
    let d = Dockerd::start();
    d.import("medic-test/api", "v1", &[&serve_cmd()]).await;
    let service = [
        ("com.docker.compose.project", "care"),
        ("com.docker.compose.service", "api"),
    ];
    let (p1, p2) = (free_port(), free_port());
    d.run(
        "care-api-1",
        "medic-test/api:v1",
        &service,
        &[&format!("PORT={p1}")],
        Some(p1),
    )
    .await;
    d.run(
        "care-api-2",
        "medic-test/api:v1",
        &service,
        &[&format!("PORT={p2}")],
        Some(p2),
    )
    .await;
    // Neither a one-off `run` of the service nor another service counts.
    let oneoff = [
        ("com.docker.compose.project", "care"),
        ("com.docker.compose.service", "api"),
        ("com.docker.compose.oneoff", "True"),
    ];
    d.run(
        "care-api-run-1",
        "medic-test/api:v1",
        &oneoff,
        &["PORT=1"],
        None,
    )
    .await;
    let other = [
        ("com.docker.compose.project", "care"),
        ("com.docker.compose.service", "worker"),
    ];
    d.run(
        "care-worker-1",
        "medic-test/api:v1",
        &other,
        &["PORT=1"],
        None,
    )
    .await;

    let config = config(&d, "api", "compose: { project: care, service: api }");
    let api = check("api", &config);
    let o = until(&api, Duration::from_secs(30), |o| *o == Outcome::Ok).await;
    assert_eq!(o, Outcome::Ok, "{}", d.log());

    kill9(pid_of(&d, "care-api-2").await);
    let o = until(&api, Duration::from_secs(30), Outcome::is_failing).await;
    assert_eq!(
        o,
        Outcome::Failing("compose service care/api: care-api-2 is exited (exit code 137)".into())
    );

    let restart = DockerRestart::build(
        &DockerRestartParams {
            target: "api".into(),
        },
        &config,
    )
    .unwrap();
    let pre = restart.preflight(&ctx(30)).await;
    assert_eq!(pre.gates[1].detail, "care-api-1, care-api-2");
    let r = restart.run(&ctx(30)).await;
    assert!(r.ok, "{r:?}\n{}", d.log());
    assert_eq!(r.detail, "restarted care-api-1, care-api-2: running again");
    assert_eq!(api.run().await, Outcome::Ok);
    for p in [p1, p2] {
        assert_eq!(http_get(p, "/", false).map(|(s, _)| s), Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_tag_is_rolled_back_to_the_previous_one() {
    let d = Dockerd::start();
    let port = free_port();
    d.import("medic-test/app", "v1", &[&serve_cmd(), "ENV MODE=v1"])
        .await;
    // The new tag's command exits at once.
    d.import(
        "medic-test/app",
        "v2",
        &["CMD [\"/bin/sh\", \"-c\", \"exit 3\"]", "ENV MODE=v2"],
    )
    .await;
    d.run(
        "app",
        "medic-test/app:v2",
        &[("team", "care")],
        &[&format!("PORT={port}")],
        Some(port),
    )
    .await;
    let config = config(&d, "app", "container: app");
    let app = check("app", &config);
    // Failing from the start ("health still starting") until the broken
    // image's process exits, which on a loaded machine can take a while.
    let o = until(
        &app,
        Duration::from_secs(30),
        |o| matches!(o, Outcome::Failing(m) if !m.contains("still starting")),
    )
    .await;
    assert_eq!(
        o,
        Outcome::Failing("container app: app is exited (exit code 3)".into())
    );

    // The same broken image again: verification fails at once (it exits,
    // nothing restarts it), and says so.
    let same = recreate(&config, None, false);
    let r = same.run(&ctx(30)).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(
        r.detail,
        "recreated app on medic-test/app:v2, but app is exited (exit code 3) and has no restart policy"
    );

    // A tag that is not on the host is refused before anything is touched.
    let missing = recreate(&config, Some("v0"), false);
    let pre = missing.preflight(&ctx(30)).await;
    let refusal = pre.refusal().expect("refused");
    assert_eq!(refusal.name, "image");
    assert!(
        refusal
            .detail
            .contains("image medic-test/app:v0 is not on this host"),
        "{refusal:?}"
    );

    let back = recreate(&config, None, true);
    let pre = back.preflight(&ctx(30)).await;
    assert_eq!(pre.refusal(), None, "{pre:?}");
    assert_eq!(
        pre.gates[2].detail,
        "app: medic-test/app:v2 -> medic-test/app:v1"
    );
    let mut actx = ctx(30);
    actx.preflight = pre.data.clone();
    let r = back.run(&actx).await;
    assert!(r.ok, "{r:?}\n{}", d.log());
    assert_eq!(r.detail, "recreated app on medic-test/app:v1: running");
    assert_eq!(r.data["replaced"][0]["from"], "medic-test/app:v2");
    assert_eq!(app.run().await, Outcome::Ok);
    assert_eq!(
        http_get(port, "/", false),
        Some((200, "medic-test/app:v1\n".into()))
    );

    // The new container kept what the old one set, and took the rest
    // from its own image.
    let c = d
        .client()
        .await
        .inspect_container("app", None)
        .await
        .unwrap();
    let cfg = c.config.unwrap();
    assert_eq!(cfg.image.as_deref(), Some("medic-test/app:v1"));
    let env = cfg.env.unwrap();
    assert!(env.contains(&format!("PORT={port}")), "{env:?}");
    assert!(env.contains(&"MODE=v1".to_string()), "{env:?}");
    assert!(!env.contains(&"MODE=v2".to_string()), "{env:?}");
    assert_eq!(cfg.labels.unwrap()["team"], "care");
    assert!(cfg.healthcheck.is_some());
    assert_eq!(c.host_config.unwrap().network_mode.as_deref(), Some("host"));
    // Only the new container is left (the old one was removed).
    let all = d
        .client()
        .await
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .build(),
        ))
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let again = back.reconcile(&actx).await.expect("in place");
    assert!(again.ok, "{again:?}");
}

fn recreate(config: &medic::config::Config, tag: Option<&str>, previous: bool) -> DockerRecreate {
    DockerRecreate::build(
        &DockerRecreateParams {
            target: "app".into(),
            tag: tag.map(str::to_string),
            previous,
        },
        config,
    )
    .unwrap()
}

/// The daemon end to end: a rule whose symptom is the `docker` check and
/// whose step is `docker.restart`; a container killed behind medic's back
/// opens an incident that the restart resolves, verified.
#[test]
fn medic_restarts_a_killed_container_and_resolves_the_incident() {
    use common::{Medic, block_on, wait_until};
    use medic::store::{AttemptOutcome, IncidentState, SqliteStore, prelude::*};

    let d = Dockerd::start();
    let port = free_port();
    block_on(async {
        d.import("medic-test/web", "v1", &[&serve_cmd()]).await;
        d.run(
            "web",
            "medic-test/web:v1",
            &[],
            &[&format!("PORT={port}")],
            Some(port),
        )
        .await;
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    let config = dir.path().join("medic.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: state/medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 5s\n\
             targets:\n  web: {{ docker: {{ socket: \"{}\", container: web, stop_timeout: 1s }} }}\n",
            d.socket_str()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/web.yaml"),
        "scenario: web-down\n\
         summary: the web container is down\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 web_down:\n\
         \x20   check: { docker: web }\n\
         \x20   every: 200ms\n\
         \x20   for: 400ms\n\
         \x20   clear_for: 400ms\n\
         when: { any: [web_down] }\n\
         plan:\n\
         \x20 - name: restart-web\n\
         \x20   action: docker.restart\n\
         \x20   target: web\n\
         \x20   timeout: 20s\n\
         \x20   verify: { clears: web_down, within: 10s }\n\
         \x20   limit: { attempts: 2, per: 1h }\n\
         escalation: default\n",
    )
    .unwrap();
    let db = dir.path().join("state/medic.db");
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    wait_until(Duration::from_secs(30), "web to answer", || {
        http_get(port, "/", false).is_some_and(|(s, _)| s == 200)
    });
    // Healthy for a while first (no incident), then killed.
    let pid = block_on(pid_of(&d, "web"));
    std::thread::sleep(Duration::from_millis(600));
    kill9(pid);
    let incidents = || {
        block_on(async {
            let store = SqliteStore::open(&db).await.unwrap();
            store.recent_incidents(10).await.unwrap()
        })
    };
    wait_until(Duration::from_secs(30), "the incident to resolve", || {
        incidents()
            .iter()
            .any(|i| i.state == IncidentState::Resolved)
    });
    assert_eq!(
        http_get(port, "/", false),
        Some((200, "medic-test/web:v1\n".into()))
    );
    assert!(medic.stop().success(), "graceful exit 0 on SIGTERM");

    block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let incs = store.recent_incidents(10).await.unwrap();
        assert_eq!(incs.len(), 1, "exactly one incident: {incs:#?}");
        let tl: Vec<String> = store
            .timeline(incs[0].id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        let find = |p: &str| {
            tl.iter()
                .position(|m| m.starts_with(p))
                .unwrap_or_else(|| panic!("no {p:?} in {tl:#?}"))
        };
        let opened = find("opened: web_down firing");
        let running = find("step restart-web: running docker restart container web");
        let verified = find("step restart-web: verified: web_down cleared");
        let resolved = find("resolved: all symptoms clear");
        assert!(
            opened < running && running < verified && verified < resolved,
            "{tl:#?}"
        );
        let ledger = store.incident_attempts(incs[0].id).await.unwrap();
        assert_eq!(ledger.len(), 1, "{ledger:#?}");
        assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Succeeded));
        assert_eq!(ledger[0].action, "docker.restart");
    });
}
