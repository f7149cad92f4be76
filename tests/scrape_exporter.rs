//! The `scrape` check against a real exporter: prometheus-redis-exporter
//! (Debian package) in front of a private redis-server, both on ephemeral
//! ports. The whole real exposition parses, and `redis_up` below 1 turns
//! failing once Redis is killed.

mod common;

use std::time::Duration;

use common::*;
use medic::check::scrape::{ScrapeCheck, ScrapeParams};
use medic::check::{Check, exposition};
use medic::config::Config;
use medic::observe::Observation;

fn body(url: &str) -> Option<String> {
    block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

#[test]
fn scrape_a_real_redis_exporter() {
    let mut redis = Redis::start_free();
    let dir = tempfile::tempdir().unwrap();
    let exporter = common::prom::Exporter::start(redis.port, dir.path());
    let url = format!("http://127.0.0.1:{}/metrics", exporter.port);
    wait_until(
        Duration::from_secs(20),
        "the exporter to serve /metrics",
        || body(&url).is_some_and(|b| b.contains("redis_up 1")),
    );

    // Every sample of the real output, as counted without a parser.
    let text = body(&url).unwrap();
    let parsed: Vec<_> = exposition::samples(&text).map(Result::unwrap).collect();
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(parsed.len(), lines);
    assert!(parsed.len() > 50, "{} samples", parsed.len());
    let kept = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap()
        .samples
        .len();
    println!(
        "redis_exporter /metrics: {lines} sample lines; medic {}, prometheus-parse {kept} sample objects",
        parsed.len()
    );

    let check = ScrapeCheck::build(
        &ScrapeParams {
            target: None,
            url: Some(url.clone()),
            metric: "redis_up".into(),
            above: None,
            below: Some(1.0),
        },
        Duration::from_secs(5),
        &Config::default(),
    )
    .unwrap();
    assert_eq!(block_on(check.observe()), Observation::Series(vec![]));

    redis.kill();
    let mut seen = None;
    wait_until(Duration::from_secs(20), "redis_up to drop to 0", || {
        let o = block_on(check.observe());
        let failing = matches!(&o, Observation::Series(s) if s.len() == 1 && s[0].value == 0.0);
        seen = Some(o);
        failing
    });
    let Some(Observation::Series(s)) = seen else {
        unreachable!()
    };
    assert_eq!(s[0].detail, "redis_up = 0 (below 1)");
    drop(exporter);
}
