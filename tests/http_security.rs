//! Acceptance (issue 13): nobody outside gets in. Against the real binary:
//! the Alertmanager intake refuses deliveries without its credentials (401)
//! or without a JSON body (415) and records nothing, while a delivery with
//! `Authorization: Bearer` (any case) opens the incident and runs the plan;
//! `/-/reload` and the decisions need the API token, reads the read token;
//! start-up and `medic check` refuse what would let anyone in; slow and
//! idle clients are cut off while `/healthz` keeps answering; TLS on the
//! listener, reloaded on SIGHUP; and a real `prometheus-alertmanager`
//! delivering with the bearer token and Basic auth of its `http_config`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use medic::store::{SqliteStore, prelude::*};
use nix::sys::signal::Signal;

/// An enforce-mode scenario on an `alert` check whose one step touches
/// `dir/acted`, and `dir/medic.yaml` with the test credentials and
/// `extra` more `http:` keys (`, key: value` entries).
fn setup(dir: &Path, http: u16, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/fire.yaml"), fire_rule(&dir.join("acted"))).unwrap();
    let config = dir.join("medic.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 2s\n\
             http: {{ listen: \"127.0.0.1:{http}\", {}{extra} }}\n",
            http_credentials(dir)
        ),
    )
    .unwrap();
    config
}

fn fire_rule(marker: &Path) -> String {
    format!(
        "scenario: fire\n\
         summary: Alertmanager says something is on fire\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 on_fire:\n\
         \x20   check: {{ alert: {{ matchers: {{ alertname: Fire }} }} }}\n\
         \x20   every: 100ms\n\
         when: {{ any: [on_fire] }}\n\
         plan:\n\
         \x20 - name: act\n\
         \x20   action: exec\n\
         \x20   args: [touch, \"{}\"]\n\
         \x20   verify: {{ within: 1s }}\n\
         \x20   limit: {{ attempts: 1, per: 1h }}\n\
         escalation: default\n",
        marker.display()
    )
}

/// A webhook body (version 4) with one firing alert named `name`.
fn delivery(name: &str) -> String {
    format!(
        r#"{{"version":"4","status":"firing","receiver":"medic","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","alerts":[{{"status":"firing","labels":{{"alertname":"{name}","instance":"db-1"}},"annotations":{{}},"startsAt":"2026-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":""}}]}}"#
    )
}

/// One request: `(status, WWW-Authenticate, body)`.
fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Option<String>, String) {
    block_on(async {
        let c = reqwest::Client::new();
        let mut r = match method {
            "GET" => c.get(url),
            _ => c.post(url),
        };
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.body(body.to_string()).send().await.unwrap();
        let auth = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), auth, r.text().await.unwrap())
    })
}

fn firing(db: &Path) -> Vec<String> {
    block_on(async {
        let s = SqliteStore::open(db).await.unwrap();
        let mut v: Vec<String> = s
            .firing_alerts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.labels["alertname"].clone())
            .collect();
        v.sort();
        v
    })
}

fn incidents(db: &Path) -> usize {
    block_on(async {
        let s = SqliteStore::open(db).await.unwrap();
        s.recent_incidents(100).await.unwrap().len()
    })
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// Forged deliveries (no credentials, a wrong token, the API or read token,
/// Basic without basic configured, a browser's `text/plain` from another
/// origin, a form) are 401/415 and leave no trace; the real one, with a
/// lower-case `bearer`, opens the incident and runs the step.
#[test]
fn the_intake_takes_only_authenticated_json() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http, "");
    let db = dir.path().join("medic.db");
    let url = format!("http://127.0.0.1:{http}/api/v1/alerts/alertmanager");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));
    let body = delivery("Fire");

    let wrong = format!("Bearer {TEST_INTAKE_TOKEN}x");
    let api = format!("Bearer {TEST_API_TOKEN}");
    let read = format!("Bearer {TEST_READ_TOKEN}");
    let empty = "Bearer ".to_string();
    // "alertmanager:" + the intake token, as Basic.
    let basic = "Basic YWxlcnRtYW5hZ2VyOnRlc3QtaW50YWtlLXRva2VuLTAxMjM0NTY3ODk=".to_string();
    for auth in [
        None,
        Some(&wrong),
        Some(&api),
        Some(&read),
        Some(&empty),
        Some(&basic),
    ] {
        let mut h = vec![JSON];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let (code, scheme, text) = call("POST", &url, &h, &body);
        assert_eq!(code, 401, "{auth:?}: {text}");
        assert_eq!(scheme.as_deref(), Some("Bearer realm=\"medic\""));
        assert!(text.contains("missing or wrong credentials"), "{text}");
    }
    // What a web page can send through an operator's browser without a
    // preflight: no credentials, so 401, and no CORS header to read it.
    let evil = [
        ("content-type", "text/plain"),
        ("origin", "https://evil.example"),
    ];
    let (code, _, _) = call("POST", &url, &evil, &body);
    assert_eq!(code, 401);
    // With the token, anything but JSON is 415.
    let ok = format!("bearer {TEST_INTAKE_TOKEN}");
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (code, _, text) = call(
            "POST",
            &url,
            &[("content-type", ct), ("authorization", &ok)],
            &body,
        );
        assert_eq!(code, 415, "{ct}: {text}");
        assert!(text.contains("Content-Type: application/json"), "{text}");
    }
    let (code, _, _) = call("POST", &url, &[("authorization", &ok)], &body);
    assert_eq!(code, 415, "no content type");

    // Nothing of it was recorded, no incident, nothing ran.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(firing(&db), Vec::<String>::new());
    assert_eq!(incidents(&db), 0);
    assert!(!dir.path().join("acted").exists());

    // The legitimate delivery: recorded, the incident opens, the step runs.
    let (code, _, text) = call("POST", &url, &[JSON, ("authorization", &ok)], &body);
    assert_eq!(code, 200, "{text}");
    wait_until(Duration::from_secs(20), "the step to run", || {
        dir.path().join("acted").exists()
    });
    assert_eq!(firing(&db), ["Fire"]);
    assert_eq!(incidents(&db), 1);
}

/// `/-/reload` and the decisions need the API token; the incidents API,
/// the status page and job runs the read token (or the API token) as a
/// bearer token or a Basic password; probes and metrics stay open.
#[test]
fn every_route_asks_for_its_own_credential() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http, "");
    let base = format!("http://127.0.0.1:{http}");
    let medic = Medic::start(&config, &dir.path().join("medic.log"));
    let api = format!("Bearer {TEST_API_TOKEN}");
    let read = format!("Bearer {TEST_READ_TOKEN}");
    let intake = format!("Bearer {TEST_INTAKE_TOKEN}");
    let upper = format!("BEARER {TEST_API_TOKEN}");

    let reloads = || medic.log_text().matches("reload").count();
    let before = reloads();
    for auth in [None, Some(&read), Some(&intake)] {
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (code, scheme, text) = call("POST", &format!("{base}/-/reload"), &h, "");
        assert_eq!(code, 401, "{auth:?}: {text}");
        assert_eq!(scheme.as_deref(), Some("Bearer realm=\"medic\""));
        let (code, _, _) = call(
            "POST",
            &format!("{base}/api/v1/incidents/1/acknowledge"),
            &[h.as_slice(), &[JSON]].concat(),
            r#"{"by": "mallory"}"#,
        );
        assert_eq!(code, 401, "{auth:?}");
    }
    assert_eq!(reloads(), before, "no refused reload ran");
    let (code, _, text) = call(
        "POST",
        &format!("{base}/-/reload"),
        &[("authorization", &upper)],
        "",
    );
    assert_eq!(code, 200, "{text}");
    // A decision with the token but a browser's content type: 415.
    let (code, _, _) = call(
        "POST",
        &format!("{base}/api/v1/incidents/1/acknowledge"),
        &[("authorization", &api), ("content-type", "text/plain")],
        r#"{"by": "x"}"#,
    );
    assert_eq!(code, 415);

    for path in [
        "/api/v1/incidents",
        "/api/v1/incidents/1",
        "/status",
        "/",
        "/api/v1/jobs/x/runs",
    ] {
        let url = format!("{base}{path}");
        let (code, scheme, _) = call("GET", &url, &[], "");
        assert_eq!(code, 401, "{path}");
        assert_eq!(
            scheme.as_deref(),
            Some("Basic realm=\"medic\", charset=\"UTF-8\""),
            "a browser asks for the token"
        );
        let (code, _, _) = call("GET", &url, &[("authorization", &intake)], "");
        assert_eq!(code, 401, "{path}: the intake token does not read");
        for ok in [&read, &api] {
            let (code, _, text) = call("GET", &url, &[("authorization", ok)], "");
            assert!(code == 200 || code == 404, "{path}: {code} {text}");
        }
        // "operator:" + the read token, as a browser sends it.
        let basic = "Basic b3BlcmF0b3I6dGVzdC1yZWFkLXRva2VuLTAxMjM0NTY3ODk=";
        let (code, _, _) = call("GET", &url, &[("authorization", basic)], "");
        assert!(code == 200 || code == 404, "{path}: {code}");
    }
    // Open: probes, metrics, and the OpenAPI document (it describes the
    // routes and holds no data).
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let (code, _, _) = call("GET", &format!("{base}{path}"), &[], "");
        assert_eq!(code, 200, "{path}");
    }
}

/// A rotated token takes effect on reload, without a restart: the token
/// files are read again; the old token is refused from then on. A reload
/// that would leave an empty token is rejected and the one in force stays.
#[test]
fn rotated_tokens_take_effect_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http, "");
    let base = format!("http://127.0.0.1:{http}");
    let medic = Medic::start(&config, &dir.path().join("medic.log"));
    let old_api = format!("Bearer {TEST_API_TOKEN}");
    let new_token = "rotated-api-token-9f8e7d6c5b4a3210";
    let new_api = format!("Bearer {new_token}");
    let reload = |auth: &str| {
        call(
            "POST",
            &format!("{base}/-/reload"),
            &[("authorization", auth)],
            "",
        )
    };
    let incidents = |auth: &str| {
        call(
            "GET",
            &format!("{base}/api/v1/incidents"),
            &[("authorization", auth)],
            "",
        )
        .0
    };
    assert_eq!(incidents(&old_api), 200);
    assert_eq!(incidents(&new_api), 401);

    std::fs::write(dir.path().join("secrets/api"), format!("{new_token}\n")).unwrap();
    // Until the reload, the token read at start-up is the one in force.
    assert_eq!(incidents(&new_api), 401);
    let (code, _, text) = reload(&old_api);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"ok\":true"), "{text}");
    assert_eq!(incidents(&new_api), 200, "the rotated token reads");
    assert_eq!(incidents(&old_api), 401, "the old token is refused");
    assert_eq!(reload(&old_api).0, 401);

    // An emptied token file: the reload is rejected, saying why; the
    // rotated token stays in force (nobody is locked out, nobody let in).
    std::fs::write(dir.path().join("secrets/api"), "\n").unwrap();
    let (code, _, text) = reload(&new_api);
    assert!(text.contains("http.api_token is empty"), "{code} {text}");
    assert!(text.contains("\"ok\":false"), "{text}");
    assert_eq!(incidents(&new_api), 200);
    assert_eq!(incidents("Bearer "), 401);
    drop(medic);
}

fn run_medic(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// `medic check` and `medic run` refuse an enforce-mode `alert` scenario
/// with an open (or absent) intake and an empty token; they warn about open
/// reads on a non-loopback listener.
#[test]
fn configs_that_let_anyone_in_are_refused_at_check_and_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http, "");
    let cfg = config.to_str().unwrap();
    let rule = dir.path().join("rules/fire.yaml");
    let (ok, out) = run_medic(&["check", "--config", cfg]);
    assert!(ok, "{out}");

    let open = format!(
        "mode: enforce\nstore: {{ sqlite: {{ path: medic.db }} }}\nhttp: {{ listen: \"127.0.0.1:{http}\", intake: {{ open: true }} }}\n"
    );
    std::fs::write(&config, &open).unwrap();
    let want = format!(
        "{}:7:5: symptom \"on_fire\" reads Alertmanager alerts and this scenario runs enforce-mode steps, but the intake is open (http.intake.open)",
        rule.display()
    );
    for cmd in ["check", "run"] {
        let (ok, out) = run_medic(&[cmd, "--config", cfg]);
        assert!(!ok && out.contains(&want), "{cmd}: {out}");
    }
    std::fs::write(&config, open.replace(", intake: { open: true }", "")).unwrap();
    let (ok, out) = run_medic(&["check", "--config", cfg]);
    assert!(
        !ok && out.contains("but the intake is off (no http.intake)"),
        "{out}"
    );

    // An empty token refuses start-up; nothing listens.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "store: {{ sqlite: {{ path: medic.db }} }}\nhttp: {{ listen: \"127.0.0.1:{http}\", api_token: {{ file: \"{}\" }} }}\n",
            empty.display()
        ),
    )
    .unwrap();
    let (ok, out) = run_medic(&["run", "--config", cfg]);
    assert!(!ok && out.contains("http.api_token is empty"), "{out}");

    // Open reads on every interface: a warning (with its position), not an error.
    std::fs::write(
        &config,
        "store: { sqlite: { path: medic.db } }\nhttp:\n  listen: 0.0.0.0:7460\n  open_reads: true\n",
    )
    .unwrap();
    let (ok, out) = run_medic(&["check", "--config", cfg]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "{cfg}:4:15: warning: open reads on 0.0.0.0:7460, not a loopback address"
        )),
        "{out}"
    );
}

/// Opens a connection and sends `sent` (a request cut short).
fn half_sent(port: u16, sent: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(sent).unwrap();
    s
}

/// Whether the server closed `s` (read gives end of file or a reset)
/// within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// `GET /healthz` over a new connection: its status and how long it took.
fn healthz(port: u16) -> (u16, Duration) {
    let t = Instant::now();
    let code = block_on(async {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    });
    (code, t.elapsed())
}

/// 500 half-sent requests stay open: `/healthz` still answers on every try,
/// and each of them is closed after `header_timeout`. A body that never
/// ends is cut off by `request_timeout` (503); deliveries holding every
/// in-flight slot of the intake make the next one 503 with Retry-After,
/// never the probes or other routes.
#[test]
fn slow_clients_are_cut_off_and_healthz_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(
        dir.path(),
        http,
        ", header_timeout: 2s, request_timeout: 4s, max_in_flight: 2, max_connections: 600",
    );
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));

    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| half_sent(http, b"GET /healthz HTTP/1.1\r\nHost: medic\r\nX-Slow: "))
        .collect();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let (code, took) = healthz(http);
        assert_eq!(code, 200, "/healthz with 500 half-sent requests open");
        worst = worst.max(took);
    }
    println!("figures: /healthz with 500 half-sent requests open: slowest of 20 {worst:?}");
    let start = Instant::now();
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "a half-sent request still open after {:?}",
            start.elapsed()
        );
    }
    println!(
        "figures: 500 half-sent requests closed {:?} after the probes",
        start.elapsed()
    );

    // A body that never ends: the intake answers 503 (Alertmanager retries)
    // after request_timeout, and holds an in-flight slot until then.
    let cut_short = || {
        half_sent(
            http,
            format!(
                "POST /api/v1/alerts/alertmanager HTTP/1.1\r\nHost: medic\r\n\
                 Authorization: Bearer {TEST_INTAKE_TOKEN}\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000\r\n\r\n{{\"version\""
            )
            .as_bytes(),
        )
    };
    let mut a = cut_short();
    let mut b = cut_short();
    // A third delivery finds the intake's slots taken; the other routes
    // have their own.
    let intake = format!("http://127.0.0.1:{http}/api/v1/alerts/alertmanager");
    let token = format!("Bearer {TEST_INTAKE_TOKEN}");
    let mut busy = String::new();
    wait_until(Duration::from_secs(10), "both intake slots taken", || {
        let h = [JSON, ("authorization", token.as_str())];
        let (code, _, text) = call("POST", &intake, &h, &delivery("Busy"));
        busy = text;
        code == 503
    });
    assert!(busy.contains("http.max_in_flight"), "{busy}");
    let (code, _, text) = call(
        "GET",
        &format!("http://127.0.0.1:{http}/api/v1/incidents"),
        &[("authorization", &format!("Bearer {TEST_READ_TOKEN}"))],
        "",
    );
    assert_eq!(code, 200, "reads have slots of their own: {text}");
    assert_eq!(healthz(http).0, 200, "probes are not counted");
    let mut answer = String::new();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = a.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("http.request_timeout"), "{answer}");
    assert!(closed_within(&mut b, Duration::from_secs(10)));
    assert!(
        firing(&dir.path().join("medic.db")).is_empty(),
        "nothing got in"
    );
}

/// With `max_connections: 8`, the ninth connection is closed as soon as it
/// is accepted; once the idle ones time out, new ones are served again.
#[test]
fn connections_beyond_the_cap_close_the_oldest_that_is_not_in_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(
        dir.path(),
        http,
        ", header_timeout: 30s, max_connections: 8",
    );
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));
    // Eight connections that never finish their headers fill the cap.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| half_sent(http, b"GET /healthz HTTP/1.1\r\n"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A probe is still answered: the oldest held connection made room.
    assert_eq!(healthz(http).0, 200);
    assert!(
        closed_within(&mut held[0], Duration::from_secs(5)),
        "the oldest held connection was not closed to make room"
    );
    // Under a stream of such connections, probes keep answering.
    for _ in 0..20 {
        held.push(half_sent(http, b"GET /healthz HTTP/1.1\r\n"));
        assert_eq!(healthz(http).0, 200);
    }
    drop(held);
}

/// Runs `openssl ARGS` (split on spaces); panics with its output when it
/// fails.
fn openssl(args: &str) {
    let out = Command::new("openssl")
        .args(args.split(' '))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA of its own and a certificate it signed for 127.0.0.1, by openssl:
/// `(ca, cert, key)` in `dir`, named after `name` (no spaces in `dir`).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |ext: &str| dir.join(format!("{name}.{ext}"));
    let s = |ext: &str| p(ext).display().to_string();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -days 2 -subj /CN={name}-ca -keyout {} -out {}",
        s("ca.key"),
        s("ca.crt")
    ));
    openssl(&format!(
        "req {ec} -subj /CN={name} -keyout {} -out {}",
        s("key"),
        s("csr")
    ));
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&format!(
        "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -days 2 -extfile {} -out {}",
        s("csr"),
        s("ca.crt"),
        s("ca.key"),
        s("ext"),
        s("crt")
    ));
    (p("ca.crt"), p("crt"), p("key"))
}

/// `GET https://127.0.0.1:{port}/healthz` trusting only `ca`.
fn https_healthz(port: u16, ca: &Path) -> Result<u16, String> {
    let pem = std::fs::read(ca).unwrap();
    block_on(async {
        let c = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        c.get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("{e:?}"))
    })
}

/// TLS on medic's own listener: served with the configured pair, plain
/// HTTP refused; a new pair is served after SIGHUP, and a broken one
/// leaves the last good pair serving.
#[test]
fn tls_on_the_listener_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let (a_ca, a_cert, a_key) = certificate(dir.path(), "first");
    let (b_ca, b_cert, b_key) = certificate(dir.path(), "second");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&a_cert, &cert).unwrap();
    std::fs::copy(&a_key, &key).unwrap();
    let config = setup(
        dir.path(),
        http,
        &format!(
            ", tls: {{ cert: \"{}\", key: \"{}\" }}",
            cert.display(),
            key.display()
        ),
    );
    let medic = Medic::start(&config, &dir.path().join("medic.log"));
    assert_eq!(https_healthz(http, &a_ca), Ok(200));
    assert!(
        https_healthz(http, &b_ca).is_err(),
        "not the second pair yet"
    );
    let (code, _) = healthz(http);
    assert_ne!(code, 200, "plain HTTP on the TLS port");

    std::fs::copy(&b_cert, &cert).unwrap();
    std::fs::copy(&b_key, &key).unwrap();
    medic.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(10), "the second pair to serve", || {
        https_healthz(http, &b_ca) == Ok(200)
    });
    assert!(
        https_healthz(http, &a_ca).is_err(),
        "the first pair is gone"
    );

    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    medic.signal(Signal::SIGHUP);
    wait_until(
        Duration::from_secs(10),
        "the refused reload in the log",
        || {
            medic
                .log_text()
                .contains("TLS certificate not reloaded; the previous one keeps serving")
        },
    );
    assert_eq!(https_healthz(http, &b_ca), Ok(200));
    drop(medic);

    // At start-up a pair that does not belong together stops medic.
    std::fs::copy(&a_cert, &cert).unwrap();
    std::fs::copy(&b_key, &key).unwrap();
    let (ok, out) = run_medic(&["run", "--config", config.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("http.tls: ") && out.contains("tls.key"),
        "{out}"
    );
}

/// `GET path` over a raw socket: whether the answer is 200.
fn raw_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// A real Alertmanager pushing to medic: one receiver with
/// `authorization: {type: Bearer, credentials_file}`, one with
/// `basic_auth`, one with a wrong token. The first two are recorded (and
/// the scenario acts on them); the forged one is refused and recorded
/// nowhere.
#[test]
fn a_real_alertmanager_delivers_with_its_http_config_credentials() {
    if Command::new("prometheus-alertmanager")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http, "");
    // The intake takes the same token as bearer and as Basic password.
    let token = dir.path().join("secrets/intake");
    let bearer = format!("intake: {{ bearer: {{ file: \"{}\" }}", token.display());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &bearer,
        &format!(
            "{bearer}, basic: {{ username: am, password: {{ file: \"{}\" }} }}",
            token.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("medic.db");
    let medic = Medic::start(&config, &dir.path().join("medic.log"));

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let hook = format!("http://127.0.0.1:{http}/api/v1/alerts/alertmanager");
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            r#"route:
  receiver: bearer
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - {{ receiver: basic, matchers: ['alertname="ViaBasic"'] }}
    - {{ receiver: forged, matchers: ['alertname="Forged"'] }}
receivers:
  - name: bearer
    webhook_configs:
      - url: {hook}
        send_resolved: true
        http_config: {{ authorization: {{ type: Bearer, credentials_file: {token} }} }}
  - name: basic
    webhook_configs:
      - url: {hook}
        http_config: {{ basic_auth: {{ username: am, password_file: {token} }} }}
  - name: forged
    webhook_configs:
      - url: {hook}
        http_config: {{ authorization: {{ type: Bearer, credentials_file: {wrong} }} }}
"#,
            token = token.display(),
            wrong = wrong.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("alertmanager.log");
    let storage = dir.path().join("am-data");
    let (mut am, am_port) = start_service(
        "prometheus-alertmanager",
        None,
        &log,
        Duration::from_secs(20),
        |port| {
            let mut c = Command::new("prometheus-alertmanager");
            c.arg(format!("--config.file={}", am_config.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=");
            c
        },
        |_, port| raw_ok(port, "/-/ready"),
    );
    let alerts = r#"[
        {"labels": {"alertname": "Fire", "instance": "db-1"}},
        {"labels": {"alertname": "ViaBasic", "instance": "db-1"}},
        {"labels": {"alertname": "Forged", "instance": "db-1"}}
    ]"#;
    let (code, _, text) = call(
        "POST",
        &format!("http://127.0.0.1:{am_port}/api/v2/alerts"),
        &[JSON],
        alerts,
    );
    assert_eq!(code, 200, "{text}");
    wait_until(Duration::from_secs(30), "both deliveries recorded", || {
        firing(&db) == ["Fire", "ViaBasic"]
    });
    wait_until(Duration::from_secs(20), "the step to run", || {
        dir.path().join("acted").exists()
    });
    wait_until(
        Duration::from_secs(20),
        "the forged delivery refused",
        || {
            medic
                .log_text()
                .contains("alertmanager webhook refused: missing or wrong credentials")
        },
    );
    assert_eq!(
        firing(&db),
        ["Fire", "ViaBasic"],
        "the forged alert is not recorded"
    );
    let _ = am.kill();
    let _ = am.wait();
}
