//! Store throughput on a file-backed SQLite store in a temp dir, with the
//! production settings (WAL, `synchronous=FULL`): every call returns only
//! once its write is on disk, so sequential figures are fsync-bound and
//! concurrent ones show what group commit buys.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medic::store::{NewIncident, SqliteStore, TimelineEntry, prelude::*};
use serde_json::json;
use tokio::runtime::Runtime;

/// Concurrent writers in the `*_concurrent` cases.
const WRITERS: u64 = 64;

fn incident(scenario: &str, instance: String) -> NewIncident {
    NewIncident {
        scenario: scenario.into(),
        instance,
        severity: "high".into(),
        summary: "bench".into(),
        at: Utc::now(),
    }
}

fn entry(i: u64) -> TimelineEntry {
    TimelineEntry::new(Utc::now(), "verify", "redis_down still failing")
        .with_data(json!({"check": "redis", "attempt": i, "latency_ms": 12.5}))
}

/// Runs `iters` calls of `op`, spread over `writers` tasks, and times them.
fn run<F, Fut>(rt: &Runtime, iters: u64, writers: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let op = op.clone();
                let n = iters / writers + u64::from(w < iters % writers);
                tokio::spawn(async move {
                    for i in 0..n {
                        op(i).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

/// A two-thread runtime and a fresh file-backed store in a temp dir (kept
/// while the returned dir lives).
fn setup() -> (Runtime, tempfile::TempDir, Arc<SqliteStore>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        rt.block_on(SqliteStore::open(&dir.path().join("bench.db")))
            .unwrap(),
    );
    (rt, dir, store)
}

fn bench_store(c: &mut Criterion) {
    let (rt, _dir, store) = setup();
    let (open, _) = rt
        .block_on(store.open_incident(incident("bench-append", String::new())))
        .unwrap();

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(8));

    for (name, writers) in [("append/sequential", 1), ("append/concurrent_64", WRITERS)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let store = store.clone();
                run(&rt, iters, writers, move |i| {
                    let store = store.clone();
                    async move { store.append(open.id, entry(i)).await.unwrap() }
                })
            })
        });
    }

    // Every call creates a new incident (a fresh key each time).
    let next_key = Arc::new(AtomicU64::new(0));
    for (name, writers) in [
        ("open_incident/new_sequential", 1),
        ("open_incident/new_concurrent_64", WRITERS),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (store, next_key) = (store.clone(), next_key.clone());
                run(&rt, iters, writers, move |_| {
                    let (store, next_key) = (store.clone(), next_key.clone());
                    async move {
                        let key = next_key.fetch_add(1, Ordering::Relaxed);
                        let (_, created) = store
                            .open_incident(incident("bench-open", key.to_string()))
                            .await
                            .unwrap();
                        assert!(created);
                    }
                })
            })
        });
    }

    // The common case in the engine: the incident is already open.
    group.bench_function("open_incident/existing_sequential", |b| {
        b.iter_custom(|iters| {
            let store = store.clone();
            run(&rt, iters, 1, move |_| {
                let store = store.clone();
                async move {
                    let (_, created) = store
                        .open_incident(incident("bench-append", String::new()))
                        .await
                        .unwrap();
                    assert!(!created);
                }
            })
        })
    });
    group.finish();
}

/// Reading a long-open incident's timeline: 20,000 entries (a flapping
/// symptom's transitions) with a decision every 1,000, read whole or by
/// kind, as the pager reads it for every notice and decision.
fn bench_long_timeline(c: &mut Criterion) {
    let (rt, _dir, store) = setup();
    let (open, _) = rt
        .block_on(store.open_incident(incident("bench-long", String::new())))
        .unwrap();
    let id = open.id;
    // Written concurrently so group commit keeps the set-up short.
    run(&rt, 20_000, WRITERS, {
        let store = store.clone();
        move |i| {
            let store = store.clone();
            async move {
                let kind = if i % 1000 == 0 { "decision" } else { "symptom" };
                let e = TimelineEntry::new(Utc::now(), kind, "symptom redis_down: ok → firing")
                    .with_data(json!({"symptom": "redis_down", "observation": {"latency_ms": 12.5, "detail": "connection refused"}}));
                store.append(id, e).await.unwrap()
            }
        }
    });
    let mut group = c.benchmark_group("timeline_20k");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("whole", |b| {
        b.iter(|| rt.block_on(store.timeline(id)).unwrap().len())
    });
    group.bench_function("decisions_only", |b| {
        b.iter(|| {
            rt.block_on(store.timeline_kinds(id, &["decision"], None))
                .unwrap()
                .len()
        })
    });
    group.bench_function("newest_3_symptoms", |b| {
        b.iter(|| {
            rt.block_on(store.timeline_kinds(id, &["symptom"], Some(3)))
                .unwrap()
                .len()
        })
    });
    group.bench_function("len", |b| {
        b.iter(|| rt.block_on(store.timeline_len(id)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_store, bench_long_timeline);
criterion_main!(benches);
