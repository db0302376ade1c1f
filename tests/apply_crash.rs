//! kill -9 of the server in the middle of an apply storm, on both stores: four users
//! keep applying six-document files (three new networks of their own, three shared
//! ones they all relabel) while the server is killed and restarted, three times. After
//! each restart every acknowledged apply is there whole, every failed one is there
//! whole or not at all, and the shared three carry one apply's label, never a mix.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{json, shoal_at, Server};

const USERS: usize = 4;

/// One user's apply number `i`: its three networks, and the shared three labelled as
/// this apply.
fn manifest(user: usize, i: usize) -> String {
    let id = format!("u{user}-{i}");
    let mut docs = Vec::new();
    for part in ["a", "b", "c"] {
        docs.push(format!(
            "apiVersion: shoal.dev/v1\nkind: Network\nmetadata:\n  name: {id}-{part}\n  labels: {{apply: {id}}}\nspec: {{subnet: 10.20.0.0/24}}\n"
        ));
        docs.push(format!(
            "apiVersion: shoal.dev/v1\nkind: Network\nmetadata:\n  name: shared-{part}\n  labels: {{apply: {id}}}\nspec: {{subnet: 10.21.0.0/24}}\n"
        ));
    }
    docs.join("---\n")
}

#[derive(Default)]
struct Outcomes {
    acknowledged: BTreeSet<String>,
    failed: BTreeSet<String>,
}

/// Runs the storm against `server` until `stop`; what each apply said.
fn storm(url: String, round: usize, stop: Arc<AtomicBool>) -> Outcomes {
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let users: Vec<_> = (0..USERS)
        .map(|user| {
            let (url, stop, out) = (url.clone(), stop.clone(), out.clone());
            std::thread::spawn(move || {
                let mut i = round * 10_000;
                while !stop.load(Ordering::SeqCst) {
                    let o = shoal_at(&url, &["apply", "-f", "-"], Some(&manifest(user, i)));
                    let id = format!("u{user}-{i}");
                    let mut out = out.lock().expect("outcomes");
                    if o.status.success() {
                        out.acknowledged.insert(id);
                    } else {
                        out.failed.insert(id);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for u in users {
        u.join().expect("user thread");
    }
    Arc::try_unwrap(out)
        .ok()
        .expect("users done")
        .into_inner()
        .expect("outcomes")
}

/// Every stored network's name → its `apply` label.
fn stored(server: &Server) -> BTreeMap<String, String> {
    let list = json(server.shoal(&["get", "networks", "-o", "json"]));
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                n["metadata"]["labels"]["apply"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn check_whole(server: &Server, outcomes: &Outcomes) {
    let now = stored(server);
    let parts = |id: &str| {
        ["a", "b", "c"]
            .iter()
            .filter(|p| now.get(&format!("{id}-{p}")).is_some_and(|l| l == id))
            .count()
    };
    for id in &outcomes.acknowledged {
        assert_eq!(parts(id), 3, "acknowledged apply {id} is not all there");
    }
    for id in &outcomes.failed {
        let n = parts(id);
        assert!(n == 0 || n == 3, "failed apply {id} left {n} of 3 objects");
    }
    let shared: BTreeSet<&String> = ["a", "b", "c"]
        .iter()
        .filter_map(|p| now.get(&format!("shared-{p}")))
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "the shared networks carry several applies' labels: {shared:?}"
    );
}

fn apply_storm_survives_kill_9(server: &mut Server) {
    for (round, run_for) in [700u64, 1300, 2000].into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let storm = {
            let (url, stop) = (server.url.clone(), stop.clone());
            std::thread::spawn(move || storm(url, round, stop))
        };
        std::thread::sleep(Duration::from_millis(run_for));
        server.kill();
        // Applies keep failing against the dead server for a moment, then stop.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        let outcomes = storm.join().expect("storm");
        server.restart();
        eprintln!(
            "round {round}: {} applies acknowledged, {} failed",
            outcomes.acknowledged.len(),
            outcomes.failed.len()
        );
        assert!(
            !outcomes.acknowledged.is_empty(),
            "round {round}: no apply landed before the crash; the storm tested nothing"
        );
        check_whole(server, &outcomes);
    }
}

#[test]
fn apply_storm_survives_kill_9_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::embedded(dir.path());
    apply_storm_survives_kill_9(&mut server);
}

#[test]
fn apply_storm_survives_kill_9_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    let mut server = Server::etcd(&etcd.address(), "crash");
    apply_storm_survives_kill_9(&mut server);
}
