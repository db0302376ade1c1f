//! The runtime against a real embedded store: controllers reconcile what changes, retry
//! failures with backoff, events merge and expire, leadership moves on resignation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shoal_api::{kind_by_name, DynamicObject, Network, NetworkSpec, Resource};
use shoal_reconcile::{
    Action, CancellationToken, Change, Controller, ControllerConfig, EventRecorder, Informers,
    LeaderElection,
};
use shoal_store::{EmbeddedStore, ObjectStore, Store};

fn store() -> (tempfile::TempDir, Arc<dyn Store>, ObjectStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    let objects = ObjectStore::new(store.clone());
    (dir, store, objects)
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn network(name: &str) -> DynamicObject {
    DynamicObject::from_typed(&Network::new(name, NetworkSpec::default())).expect("object")
}

#[derive(Debug)]
struct Flaky;
impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flaky on purpose")
    }
}

struct Ctx {
    objects: ObjectStore,
    calls: Mutex<HashMap<String, usize>>,
    running: AtomicUsize,
    max_running_same: AtomicUsize,
}

async fn reconcile(net: Arc<Network>, ctx: Arc<Ctx>) -> Result<Action, Flaky> {
    let n = {
        let mut calls = ctx.calls.lock().expect("lock");
        let c = calls.entry(net.name().to_string()).or_insert(0);
        *c += 1;
        *c
    };
    let now = ctx.running.fetch_add(1, Ordering::SeqCst) + 1;
    ctx.max_running_same.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    ctx.running.fetch_sub(1, Ordering::SeqCst);
    if net.name() == "flaky" && n < 3 {
        return Err(Flaky);
    }
    let observed = net.metadata.generation.unwrap_or(0);
    if net.status.as_ref().and_then(|s| s.observed_generation) != Some(observed) {
        let kind = kind_by_name("Network").expect("kind");
        ctx.objects
            .update_status(
                kind,
                net.name(),
                json!({"observedGeneration": observed}),
                None,
            )
            .await
            .map_err(|_| Flaky)?;
    }
    Ok(Action::AwaitChange)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_changes_and_retries_failures() {
    let (_dir, _store, objects) = store();
    for name in ["a", "b", "flaky"] {
        objects.create(network(name), None).await.expect("create");
    }
    let ctx = Arc::new(Ctx {
        objects: objects.clone(),
        calls: Mutex::new(HashMap::new()),
        running: AtomicUsize::new(0),
        max_running_same: AtomicUsize::new(0),
    });
    let shutdown = CancellationToken::new();
    let mut config = ControllerConfig::named("test");
    config.backoff_base = Duration::from_millis(50);
    let informers = Informers::new(objects.clone(), shutdown.clone());
    let controller = Controller::<Network>::new(&informers, config);
    let run = tokio::spawn(controller.run(
        reconcile,
        |_, _, _| Action::Backoff,
        ctx.clone(),
        shutdown.clone(),
    ));

    let observed = |name: &'static str, generation: i64| {
        let objects = objects.clone();
        move || {
            let objects = objects.clone();
            async move {
                objects
                    .get_typed::<Network>(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|n| n.status.and_then(|s| s.observed_generation))
                    == Some(generation)
            }
        }
    };
    eventually("a observed", observed("a", 1)).await;
    eventually("b observed", observed("b", 1)).await;
    eventually("flaky observed after retries", observed("flaky", 1)).await;
    assert!(
        ctx.calls.lock().expect("lock")["flaky"] >= 3,
        "failures are retried"
    );

    // A spec change bumps the generation and is reconciled again.
    let mut changed = network("a");
    changed
        .body
        .insert("spec".into(), json!({"driver": "bridge"}));
    let (outcome, _) = objects.apply(changed, false).await.expect("apply");
    assert_eq!(outcome.to_string(), "configured");
    eventually("a observed at generation 2", observed("a", 2)).await;

    // A deleted object is not reconciled (it is gone from the cache).
    let kind = kind_by_name("Network").expect("kind");
    let before = ctx.calls.lock().expect("lock")["b"];
    objects.delete(kind, "b").await.expect("delete");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ctx.calls.lock().expect("lock")["b"],
        before,
        "a deleted object is not reconciled"
    );
    assert!(
        ctx.max_running_same.load(Ordering::SeqCst) <= 4,
        "at most `concurrency` at once"
    );
    shutdown.cancel();
    run.await.expect("controller stops on shutdown");
}

/// Controllers that start late share the cache that is already running: they are told
/// about what it holds, then about every change, like the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_cache_replays_itself_to_late_subscribers() {
    let (_dir, _store, objects) = store();
    objects.create(network("a"), None).await.expect("a");
    let shutdown = CancellationToken::new();
    let informers = Informers::new(objects.clone(), shutdown.clone());
    let first = informers.get::<Network>();
    first.reader().wait_ready().await;
    objects.create(network("b"), None).await.expect("b");
    eventually("b cached", || {
        let r = first.reader();
        async move { r.get("b").is_some() }
    })
    .await;

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let second = informers.get::<Network>();
    second.on_change(move |c| {
        let (Change::Applied(n) | Change::Deleted(n)) = c;
        s.lock().expect("lock").push(n.name().to_string());
    });
    let mut replayed = seen.lock().expect("lock").clone();
    replayed.sort();
    assert_eq!(replayed, ["a", "b"], "told about what was cached");
    assert_eq!(second.reader().len(), 2, "one cache, not a second list");

    objects.create(network("c"), None).await.expect("c");
    eventually("c seen by the late subscriber", || {
        let seen = seen.clone();
        async move { seen.lock().expect("lock").iter().any(|n| n == "c") }
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_merge_repeats_and_expire() {
    let (_dir, _store, objects) = store();
    let net: Network = objects
        .create(network("front"), None)
        .await
        .expect("create")
        .to_typed()
        .expect("typed");
    let recorder =
        EventRecorder::with_ttl(objects.clone(), "test-controller", Duration::from_secs(2));
    for _ in 0..3 {
        recorder
            .warning(&net, "SubnetClash", "10.0.0.0/24 is taken")
            .await;
    }
    recorder.normal(&net, "Created", "network created").await;
    let kind = kind_by_name("Event").expect("kind");
    let (events, _) = objects.list(kind).await.expect("list");
    assert_eq!(events.len(), 2, "{events:?}");
    let clash = events
        .iter()
        .find(|e| e.body["reason"] == "SubnetClash")
        .expect("clash");
    assert_eq!(clash.body["count"], 3);
    assert_eq!(clash.body["type"], "Warning");
    assert_eq!(clash.body["involvedObject"]["name"], "front");
    assert_eq!(clash.body["involvedObject"]["kind"], "Network");
    assert_eq!(clash.body["source"], "test-controller");
    assert!(clash.body["firstTimestamp"].as_str() <= clash.body["lastTimestamp"].as_str());
    let objects2 = objects.clone();
    eventually("events expire", move || {
        let objects = objects2.clone();
        async move {
            objects
                .list(kind)
                .await
                .map(|(e, _)| e.is_empty())
                .unwrap_or(false)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_passes_on_when_the_leader_resigns() {
    let (_dir, store, _objects) = store();
    let key = "/shoal/leader/test";
    let leading: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let start = |id: &'static str, shutdown: CancellationToken| {
        let election = LeaderElection::new(store.clone(), key, id).with_ttl(Duration::from_secs(1));
        let leading = leading.clone();
        tokio::spawn(async move {
            election
                .run(shutdown, move |term| {
                    let leading = leading.clone();
                    async move {
                        leading.lock().expect("lock").push(id);
                        term.cancelled().await;
                        leading.lock().expect("lock").retain(|l| *l != id);
                    }
                })
                .await
        })
    };
    let a_stop = CancellationToken::new();
    let b_stop = CancellationToken::new();
    let a = start("a", a_stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = start("b", b_stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        *leading.lock().expect("lock"),
        vec!["a"],
        "exactly one leader, the first"
    );
    assert_eq!(
        store.get(key).await.expect("get").map(|kv| kv.value),
        Some(b"a".to_vec())
    );
    a_stop.cancel();
    a.await.expect("a stops");
    let l = leading.clone();
    eventually("b leads", move || {
        let l = l.clone();
        async move { *l.lock().expect("lock") == vec!["b"] }
    })
    .await;
    b_stop.cancel();
    b.await.expect("b stops");
}

/// More than ten similar events on one object in ten minutes are one Event with a count,
/// as client-go's correlator combines them; other objects and reasons are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_events_are_combined_past_ten() {
    let (_dir, _store, objects) = store();
    let net: Network = objects
        .create(network("front"), None)
        .await
        .expect("create")
        .to_typed()
        .expect("typed");
    let recorder = EventRecorder::new(objects.clone(), "test-controller");
    for i in 0..25 {
        recorder
            .warning(
                &net,
                "FailedScheduling",
                &format!("{i} tasks cannot be placed"),
            )
            .await;
    }
    recorder.normal(&net, "Created", "network created").await;
    let kind = kind_by_name("Event").expect("kind");
    let (events, _) = objects.list(kind).await.expect("list");
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.body["reason"] == "FailedScheduling")
        .collect();
    assert_eq!(failed.len(), 11, "ten alone, then one combined: {failed:?}");
    let combined = failed
        .iter()
        .find(|e| {
            e.body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("(combined from similar events): "))
        })
        .expect("a combined event");
    assert_eq!(combined.body["count"], 15);
    assert_eq!(
        combined.body["message"],
        "(combined from similar events): 24 tasks cannot be placed"
    );
    assert!(events.iter().any(|e| e.body["reason"] == "Created"));
}
