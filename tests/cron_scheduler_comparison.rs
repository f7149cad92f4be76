//! Why medic schedules its jobs with its own loop over the `cron` crate
//! and not tokio-cron-scheduler: measured here (real time, ~8 s; run with
//! `cargo test --test cron_scheduler_comparison -- --ignored --nocapture`).
//!
//! A job that takes 2.5 s on a schedule firing every second: how many runs
//! overlap? tokio-cron-scheduler spawns every firing as its own task, so
//! runs pile up; medic's loop awaits each run (never two at once). The
//! missed-run rule (run once at start-up for slots missed while medic was
//! down) needs the last slot from durable state: tokio-cron-scheduler's
//! default in-memory store starts empty and fires only future slots, and
//! its paused-clock behaviour follows the wall clock, not tokio's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: real time"]
async fn tokio_cron_scheduler_overlaps_runs_that_overrun() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let sched = JobScheduler::new().await.unwrap();
    let (r, m, n) = (running.clone(), most.clone(), runs.clone());
    let job = Job::new_async("* * * * * *", move |_id, _l| {
        let (r, m, n) = (r.clone(), m.clone(), n.clone());
        Box::pin(async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            n.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2500)).await;
            r.fetch_sub(1, Ordering::SeqCst);
        })
    })
    .unwrap();
    sched.add(job).await.unwrap();
    let mut sched = sched;
    sched.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    sched.shutdown().await.unwrap();
    let (most, runs) = (most.load(Ordering::SeqCst), runs.load(Ordering::SeqCst));
    println!("tokio-cron-scheduler: {runs} runs started in 8 s, at most {most} at once");
    assert!(most > 1, "runs overlapped: {most} at once");
}
