//! `route53.failover` against moto_server (a real Route 53 API
//! implementation, started by the test on 127.0.0.1), and against a small
//! fake for what moto never does: PENDING before INSYNC, Throttling and
//! PriorRequestNotComplete.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::moto::Moto;
use medic::remedy::route53::{Failover, FailoverParams, Pacing};
use medic::remedy::{Action, ActionContext};

fn client(port: u16) -> aws_sdk_route53::Client {
    let conf = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    aws_sdk_route53::Client::from_conf(conf)
}

async fn upsert(c: &aws_sdk_route53::Client, zone: &str, name: &str, ttl: i64, value: &str) {
    let set = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::A)
        .ttl(ttl)
        .resource_records(ResourceRecord::builder().value(value).build().unwrap())
        .build()
        .unwrap();
    c.change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(set)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

async fn values(c: &aws_sdk_route53::Client, zone: &str, name: &str) -> Vec<String> {
    let out = c
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    out.resource_record_sets()
        .iter()
        .filter(|s| s.name() == name && *s.r#type() == RrType::A)
        .flat_map(|s| s.resource_records().iter().map(|r| r.value().to_string()))
        .collect()
}

/// A config with one route53 target; credentials come from files.
fn config(dir: &std::path::Path, port: u16, zone: &str, record: &str) -> medic::config::Config {
    std::fs::write(dir.join("akid"), "testing\n").unwrap();
    std::fs::write(dir.join("secret"), "testing\n").unwrap();
    medic::config::load_str(
        "medic.yaml",
        &format!(
            "targets:
  app-dns:
    route53:
      hosted_zone_id: {zone}
      record: {record}
      primary: [192.0.2.10]
      secondary: [198.51.100.10]
      ttl: 60
      endpoint_url: \"http://127.0.0.1:{port}\"
      credentials:
        access_key_id: {{ file: {} }}
        secret_access_key: {{ file: {} }}
",
            dir.join("akid").display(),
            dir.join("secret").display()
        ),
    )
    .unwrap()
}

fn failover(config: &medic::config::Config, within: u64) -> Failover {
    Failover::build(
        &FailoverParams {
            target: "app-dns".into(),
            within: Some(format!("{within}s").parse().unwrap()),
        },
        config,
    )
    .unwrap()
}

fn ctx() -> ActionContext {
    ActionContext::new("5:1:1", Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_record_fails_over_and_reads_back_and_long_ttls_are_refused() {
    let moto = Moto::start();
    let c = client(moto.port);
    let zone = c
        .create_hosted_zone()
        .name("example.com.")
        .caller_reference("medic-test")
        .send()
        .await
        .unwrap()
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string();
    upsert(&c, &zone, "app.example.com.", 60, "192.0.2.10").await;
    upsert(&c, &zone, "slow.example.com.", 3600, "192.0.2.20").await;
    let dir = tempfile::tempdir().unwrap();

    let cfg = config(dir.path(), moto.port, &zone, "app.example.com.");
    let a = failover(&cfg, 60);
    let mut cx = ctx();
    let pre = a.preflight(&cx).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    let details: Vec<&str> = pre.gates.iter().map(|g| g.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "app.example.com. A = 192.0.2.10",
            "TTL 60s (max 60s)",
            "192.0.2.10 → 198.51.100.10"
        ]
    );
    cx.preflight = pre.data;
    let r = a.run(&cx).await;
    assert!(r.ok, "{r:#?}");
    assert!(
        r.detail
            .starts_with("app.example.com. A now 198.51.100.10 (change "),
        "{}",
        r.detail
    );
    assert_eq!(
        values(&c, &zone, "app.example.com.").await,
        ["198.51.100.10"]
    );
    // Again: already there, nothing to change; and after a crash the
    // attempt reconciles by reading the record back.
    let pre = a.preflight(&ctx()).await;
    assert_eq!(pre.data["already"], true);
    assert!(a.reconcile(&ctx()).await.unwrap().ok);

    let slow = config(dir.path(), moto.port, &zone, "slow.example.com.");
    let pre = failover(&slow, 60).preflight(&ctx()).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "ttl");
    assert!(
        g.detail.starts_with("TTL 3600s is above max_ttl 60s"),
        "{}",
        g.detail
    );
    assert_eq!(
        values(&c, &zone, "slow.example.com.").await,
        ["192.0.2.20"],
        "untouched"
    );

    let missing = config(dir.path(), moto.port, &zone, "nope.example.com.");
    let g = failover(&missing, 60)
        .preflight(&ctx())
        .await
        .refusal()
        .cloned()
        .expect("refused");
    assert_eq!(g.name, "record-exists");
}

/// The fake Route 53: scripted answers, every request recorded.
#[derive(Clone, Default)]
struct Fake {
    /// Answers to ChangeResourceRecordSets, in order (the last repeats).
    changes: Arc<Mutex<Vec<(u16, String)>>>,
    /// Statuses GetChange reports, in order (the last repeats).
    statuses: Arc<Mutex<Vec<&'static str>>>,
    /// The record's value as ListResourceRecordSets reports it.
    value: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<String>>>,
}

const NS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

fn error(code: &str) -> (u16, String) {
    (
        400,
        format!(
            "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{code} (fake)</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
        ),
    )
}

fn change_info(status: &str) -> String {
    format!(
        "<ChangeInfo><Id>/change/C0FAKE</Id><Status>{status}</Status><SubmittedAt>2026-01-01T00:00:00Z</SubmittedAt></ChangeInfo>"
    )
}

fn next<T: Clone>(v: &Mutex<Vec<T>>) -> T {
    let mut g = v.lock().unwrap();
    if g.len() > 1 {
        g.remove(0)
    } else {
        g[0].clone()
    }
}

async fn handle(
    axum::extract::State(f): axum::extract::State<Fake>,
    method: Method,
    uri: Uri,
    body: String,
) -> impl IntoResponse {
    let path = uri.path().to_string();
    f.seen.lock().unwrap().push(format!("{method} {path}"));
    let (status, xml) = if method == Method::POST && path.trim_end_matches('/').ends_with("/rrset")
    {
        let (code, xml) = next(&f.changes);
        if code == 200 {
            assert!(body.contains("<Action>UPSERT</Action>"), "{body}");
            *f.value.lock().unwrap() = "198.51.100.10".into();
        }
        (code, xml)
    } else if method == Method::GET && path.starts_with("/2013-04-01/change/") {
        let s = next(&f.statuses);
        (
            200,
            format!(
                "<?xml version=\"1.0\"?>\n<GetChangeResponse xmlns=\"{NS}\">{}</GetChangeResponse>",
                change_info(s)
            ),
        )
    } else if method == Method::GET && path.ends_with("/rrset") {
        let v = f.value.lock().unwrap().clone();
        (
            200,
            format!(
                "<?xml version=\"1.0\"?>\n<ListResourceRecordSetsResponse xmlns=\"{NS}\"><ResourceRecordSets><ResourceRecordSet><Name>app.example.com.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>{v}</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems></ListResourceRecordSetsResponse>"
            ),
        )
    } else {
        error(&format!("InvalidInput-{method}-{path}"))
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "text/xml")],
        xml,
    )
}

async fn fake(changes: Vec<(u16, String)>, statuses: Vec<&'static str>) -> (Fake, u16) {
    let f = Fake {
        changes: Arc::new(Mutex::new(changes)),
        statuses: Arc::new(Mutex::new(statuses)),
        value: Arc::new(Mutex::new("192.0.2.10".into())),
        seen: Arc::default(),
    };
    let app = axum::Router::new().fallback(handle).with_state(f.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (f, port)
}

fn quick() -> Pacing {
    Pacing {
        first_poll: Duration::from_millis(20),
        max_poll: Duration::from_millis(80),
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_backed_off_and_pending_is_polled_until_insync() {
    let ok = (
        200,
        format!(
            "<?xml version=\"1.0\"?>\n<ChangeResourceRecordSetsResponse xmlns=\"{NS}\">{}</ChangeResourceRecordSetsResponse>",
            change_info("PENDING")
        ),
    );
    let (f, port) = fake(
        vec![error("Throttling"), error("PriorRequestNotComplete"), ok],
        vec!["PENDING", "PENDING", "INSYNC"],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), port, "ZFAKE", "app.example.com.");
    let a = failover(&cfg, 10).with_pacing(quick());
    let r = a.run(&ctx()).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        r.detail,
        "app.example.com. A now 198.51.100.10 (change C0FAKE INSYNC after 3 polls, 2 retries)"
    );
    assert_eq!(
        *f.seen.lock().unwrap(),
        [
            "POST /2013-04-01/hostedzone/ZFAKE/rrset",
            "POST /2013-04-01/hostedzone/ZFAKE/rrset",
            "POST /2013-04-01/hostedzone/ZFAKE/rrset",
            "GET /2013-04-01/change/C0FAKE",
            "GET /2013-04-01/change/C0FAKE",
            "GET /2013-04-01/change/C0FAKE",
            "GET /2013-04-01/hostedzone/ZFAKE/rrset",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_never_insync_fails_at_its_deadline() {
    let ok = (
        200,
        format!(
            "<?xml version=\"1.0\"?>\n<ChangeResourceRecordSetsResponse xmlns=\"{NS}\">{}</ChangeResourceRecordSetsResponse>",
            change_info("PENDING")
        ),
    );
    let (_f, port) = fake(vec![ok], vec!["PENDING"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), port, "ZFAKE", "app.example.com.");
    let a = failover(&cfg, 1).with_pacing(quick());
    let started = std::time::Instant::now();
    let r = a.run(&ctx()).await;
    assert!(!r.ok);
    assert!(
        r.detail.starts_with("change C0FAKE still PENDING after 1s"),
        "{}",
        r.detail
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_errors_are_not_retried() {
    let (f, port) = fake(vec![error("InvalidChangeBatch")], vec!["PENDING"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), port, "ZFAKE", "app.example.com.");
    let r = failover(&cfg, 10).with_pacing(quick()).run(&ctx()).await;
    assert!(!r.ok);
    assert_eq!(
        r.detail,
        "ChangeResourceRecordSets: InvalidChangeBatch: InvalidChangeBatch (fake)"
    );
    assert_eq!(f.seen.lock().unwrap().len(), 1);
}
