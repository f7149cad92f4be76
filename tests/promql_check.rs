//! The promql check against a real Prometheus (basic auth on) scraping a
//! real prometheus-redis-exporter every second, which watches a private
//! redis-server. Everything on 127.0.0.1, ephemeral ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::Redis;
use common::prom::{Exporter, PASSWORD, Prometheus, USER};
use medic::check::promql::PromqlParams;
use medic::check::{Check, CheckSpec};
use medic::config::{BasicAuth, Config, PrometheusTarget, TargetConfig};
use medic::observe::{Observation, Outcome};
use medic::secret::SecretRef;

fn config(url: &str, auth: Option<BasicAuth>, bearer: Option<SecretRef>) -> Config {
    let mut c = Config::default();
    c.targets.insert(
        "prom".into(),
        TargetConfig::Prometheus(PrometheusTarget {
            url: url.into(),
            bearer_token: bearer,
            basic_auth: auth,
        }),
    );
    c
}

fn check(config: &Config, query: &str) -> std::sync::Arc<dyn Check> {
    let spec = CheckSpec::Promql(PromqlParams {
        query: query.into(),
        source: None,
    });
    medic::check::build(&spec, Duration::from_secs(3), config).unwrap()
}

fn unknown(o: Observation) -> String {
    match o {
        Observation::Whole(Outcome::Unknown(m)) => m,
        other => panic!("expected unknown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_against_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start_free();
    let exporter = Exporter::start(redis.port, dir.path());
    let mut prom = Prometheus::start(&[format!("127.0.0.1:{}", exporter.port)], dir.path());
    let pw = dir.path().join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let auth = BasicAuth {
        username: USER.into(),
        password: SecretRef::File(pw),
    };
    let cfg = config(&prom.url(), Some(auth), None);

    // Wait for both jobs' first scrapes.
    let up = check(&cfg, "redis_up == 1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let series = loop {
        match up.observe().await {
            Observation::Series(s) if s.len() == 2 => break s,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "no scrape yet: {other:?}\n{}",
                prom.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(up.per_series());
    // Per series: labels from the result, told apart by job.
    let mut jobs: Vec<&str> = series.iter().map(|s| s.labels["job"].as_str()).collect();
    jobs.sort();
    assert_eq!(jobs, ["redis-a", "redis-b"]);
    let instance = format!("127.0.0.1:{}", exporter.port);
    for s in &series {
        assert_eq!(s.labels["instance"], instance);
        assert_eq!(s.labels["__name__"], "redis_up");
        assert_eq!(s.value, 1.0);
        assert!(s.detail.ends_with("} = 1"), "{}", s.detail);
    }

    // Empty result: ok. An aggregated condition gives one series per group.
    assert_eq!(
        check(&cfg, "redis_up == 0").observe().await,
        Observation::Series(vec![])
    );
    let Observation::Series(by_job) = check(&cfg, "sum by (job) (redis_up) > 0").observe().await
    else {
        panic!("not series")
    };
    assert_eq!(by_job.len(), 2);
    assert_eq!(by_job[0].labels.len(), 1, "{by_job:?}");

    // Scalars: non-zero is failing, zero is ok.
    assert_eq!(
        check(&cfg, "scalar(sum(redis_up)) > bool 1").run().await,
        Outcome::Failing("scalar = 1".into())
    );
    assert_eq!(
        check(&cfg, "scalar(sum(redis_up)) > bool 5").run().await,
        Outcome::Ok
    );

    // A bad query: unknown, with Prometheus's own error text.
    let m = unknown(check(&cfg, "sum(redis_up").observe().await);
    assert!(m.starts_with("prometheus prom: bad_data: "), "{m}");
    assert!(m.contains("parse error"), "{m}");
    // A range vector is not a condition.
    let m = unknown(check(&cfg, "redis_up[1m]").observe().await);
    assert!(m.contains("range vector"), "{m}");

    // Without credentials Prometheus refuses: unknown, not failing.
    let m = unknown(
        check(&config(&prom.url(), None, None), "redis_up")
            .observe()
            .await,
    );
    assert!(m.contains("HTTP 401"), "{m}");

    // Redis dies: the exporter reports redis_up 0, and the condition holds
    // for both series.
    redis.kill();
    let down = check(&cfg, "redis_up == 0");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match down.observe().await {
            Observation::Series(s) if s.len() == 2 => break,
            other => assert!(tokio::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Prometheus dies: every promql symptom is unknown (medic is blind).
    prom.kill();
    let m = unknown(down.observe().await);
    assert!(
        m.starts_with(&format!("prometheus prom at {} unreachable: ", prom.url())),
        "{m}"
    );
}

/// Bearer tokens (Prometheus behind a proxy): the header is sent as
/// configured. A one-shot local server records the request and answers
/// with a real Prometheus answer (fixture).
#[tokio::test]
async fn sends_the_bearer_token_and_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::fs::read("/work/shared/fixtures/prometheus-api/query-vector.json").unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            answer.len()
        );
        s.write_all(resp.as_bytes()).unwrap();
        s.write_all(&answer).unwrap();
        head
    });
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "s3cr3t\n").unwrap();
    let cfg = config(
        &format!("http://127.0.0.1:{port}/prom/"),
        None,
        Some(SecretRef::File(tok)),
    );
    let o = check(&cfg, "up == 0").observe().await;
    let head = server.join().unwrap();
    let first = head.lines().next().unwrap();
    assert_eq!(
        first,
        "GET /prom/api/v1/query?query=up+%3D%3D+0&timeout=3000ms HTTP/1.1"
    );
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer s3cr3t")),
        "{head}"
    );
    let Observation::Series(s) = o else {
        panic!("{o:?}")
    };
    assert_eq!(s.len(), 2);
}
