//! Kubernetes Lease election against a fake API server that keeps real
//! `coordination.k8s.io/v1` Lease objects (resourceVersion conflicts
//! included): acquire, renew, lose, take over on expiry; the exact requests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_kube::{FakeKube, TOKEN};
use medic::clock::Clock;
use medic::connect;
use medic::lead::Role;
use medic::lead::kubernetes::Elector;
use medic::store::{MemoryStore, prelude::*};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NS: &str = "medic";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/medic/leases";

async fn elector(
    kube: &FakeKube,
    dir: &std::path::Path,
    id: &str,
    store: Arc<dyn Store>,
) -> Elector {
    let c = connect::kubernetes(Some(&kube.kubeconfig(dir, NS)))
        .await
        .unwrap();
    Elector {
        api: kube::Api::namespaced(c, NS),
        name: "medic".into(),
        lease: Duration::from_secs(2),
        identity: id.into(),
        store,
        clock: Clock::system(),
    }
}

async fn until(
    rx: &mut watch::Receiver<Role>,
    limit: Duration,
    want: impl Fn(Role) -> bool,
) -> Role {
    let got =
        tokio::time::timeout(limit, async { *rx.wait_for(|r| want(*r)).await.unwrap() }).await;
    got.unwrap_or_else(|_| panic!("role still {:?} after {limit:?}", *rx.borrow()))
}

fn spec(kube: &FakeKube) -> Value {
    kube.object(LEASES, "medic").expect("the lease exists")["spec"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_acquire_renew_lose_and_take_over_on_expiry() {
    let kube = FakeKube::start().await;
    kube.objects(LEASES);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());

    // Acquire: no Lease yet, so A creates it holding it, with term 1.
    let (a_tx, mut a_rx) = watch::channel(Role::Follower);
    let a_stop = CancellationToken::new();
    let a = tokio::spawn(
        elector(&kube, dir.path(), "replica-a", store.clone())
            .await
            .run(a_tx, a_stop.clone()),
    );
    assert_eq!(
        until(&mut a_rx, Duration::from_secs(5), |r| r.term().is_some()).await,
        Role::Leader(1)
    );
    let s = spec(&kube);
    assert_eq!(s["holderIdentity"], "replica-a");
    assert_eq!(s["leaseDurationSeconds"], 2);
    assert_eq!(s["leaseTransitions"], 0);
    assert_eq!(s["acquireTime"], s["renewTime"]);
    let seen = kube.take_seen();
    assert_eq!(
        seen.iter()
            .map(|r| format!("{} {}", r.method, r.uri))
            .take(2)
            .collect::<Vec<_>>(),
        // kube-rs sends an empty query string on create.
        [format!("GET {LEASES}/medic"), format!("POST {LEASES}?")]
    );
    assert!(
        seen.iter()
            .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {TOKEN}")))
    );
    let created: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(created["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(created["kind"], "Lease");
    assert_eq!(created["metadata"]["name"], "medic");

    // Renew: renewTime moves on, with PUTs carrying the resourceVersion read.
    let first_renew = s["renewTime"].clone();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = spec(&kube);
    assert_ne!(s["renewTime"], first_renew);
    assert_eq!(s["acquireTime"], first_renew, "acquireTime stays");
    let seen = kube.take_seen();
    let puts: Vec<_> = seen.iter().filter(|r| r.method == "PUT").collect();
    assert!(!puts.is_empty());
    assert!(
        puts.iter().all(|r| r.uri == format!("{LEASES}/medic?")),
        "{puts:?}"
    );
    let put: Value = serde_json::from_str(&puts[0].body).unwrap();
    assert!(put["metadata"]["resourceVersion"].is_string(), "{put}");
    assert_eq!(put["spec"]["holderIdentity"], "replica-a");

    // B follows while A renews, for longer than the lease.
    let (b_tx, mut b_rx) = watch::channel(Role::Follower);
    let b_stop = CancellationToken::new();
    let b = tokio::spawn(
        elector(&kube, dir.path(), "replica-b", store.clone())
            .await
            .run(b_tx, b_stop.clone()),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(*b_rx.borrow(), Role::Follower);
    assert_eq!(spec(&kube)["holderIdentity"], "replica-a");

    // A dies without releasing (its renewals stop): B takes over once the
    // record has not changed for leaseDurationSeconds, with a new term.
    a.abort();
    let died = Instant::now();
    assert_eq!(
        until(&mut b_rx, Duration::from_secs(6), |r| r.term().is_some()).await,
        Role::Leader(2)
    );
    let took = died.elapsed();
    println!("lease takeover after the holder stopped renewing (lease 2s): {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "not before the lease ran out: {took:?}"
    );
    let s = spec(&kube);
    assert_eq!(s["holderIdentity"], "replica-b");
    assert_eq!(s["leaseTransitions"], 1);
    assert_eq!(
        store.current_term().await.unwrap().unwrap().holder,
        "replica-b"
    );

    // Lose: someone else takes the lease; B stops renewing it and steps
    // down within two thirds of the lease, before anyone else may act.
    let mut stolen = kube.object(LEASES, "medic").unwrap();
    stolen["spec"]["holderIdentity"] = "intruder".into();
    kube.set_object(LEASES, "medic", stolen);
    let lost = Instant::now();
    until(&mut b_rx, Duration::from_secs(4), |r| r == Role::Follower).await;
    assert!(
        lost.elapsed() < Duration::from_secs(2),
        "{:?}",
        lost.elapsed()
    );
    assert_eq!(
        spec(&kube)["holderIdentity"],
        "intruder",
        "B did not overwrite it"
    );

    // Once the intruder stops renewing, B takes it back (term 3); on stop it
    // releases the lease so the next holder need not wait.
    assert_eq!(
        until(&mut b_rx, Duration::from_secs(6), |r| r.term().is_some()).await,
        Role::Leader(3)
    );
    assert_eq!(spec(&kube)["leaseTransitions"], 2);
    b_stop.cancel();
    b.await.unwrap();
    assert_eq!(*b_rx.borrow(), Role::Follower);
    assert!(spec(&kube)["holderIdentity"].is_null(), "{}", spec(&kube));
    a_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_never_both_hold_the_lease() {
    let kube = FakeKube::start().await;
    kube.objects(LEASES);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let stop = CancellationToken::new();
    let mut rxs = Vec::new();
    for i in 0..3 {
        let (tx, rx) = watch::channel(Role::Follower);
        let e = elector(&kube, dir.path(), &format!("r{i}"), store.clone()).await;
        tokio::spawn(e.run(tx, stop.clone()));
        rxs.push(rx);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut saw_leader = false;
    while Instant::now() < deadline {
        let leaders = rxs.iter().filter(|r| r.borrow().term().is_some()).count();
        assert!(leaders <= 1, "{leaders} leaders at once");
        saw_leader |= leaders == 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_leader);
    // Exactly one create won; the others got 409 and follow.
    let holder = spec(&kube)["holderIdentity"].as_str().unwrap().to_string();
    let leader = rxs
        .iter()
        .position(|r| r.borrow().term().is_some())
        .unwrap();
    assert_eq!(holder, format!("r{leader}"));
    stop.cancel();
}
