//! Watches under load, on both stores: every watcher sees every change it asked for, in
//! order, whether it keeps up with the server's watch cache or falls far behind it (a
//! client that reads nothing until the end; with a tiny cache buffer it is served from
//! the store's history instead).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use support::*;

const TASKS: usize = 1500;

fn manifests(range: std::ops::Range<usize>, relabel: &[usize]) -> String {
    range
        .map(|i| {
            let app = if i % 2 == 0 && !relabel.contains(&i) {
                "x"
            } else {
                "y"
            };
            // Big enough that a client reading nothing fills every buffer on the way.
            let pad = "p".repeat(4000);
            format!(
                "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {{name: w-{i}, labels: {{app: {app}}}}}\nspec: {{image: local/busybox:1, env: {{PAD: {pad}}}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// (type, name) of each line until `done` holds, checking revisions never go back.
fn collect(
    rx: &Receiver<String>,
    done: impl Fn(&HashMap<&'static str, BTreeSet<String>>) -> bool,
) -> HashMap<&'static str, BTreeSet<String>> {
    let mut seen: HashMap<&'static str, BTreeSet<String>> = HashMap::new();
    let mut last_revision = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done(&seen) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| {
                panic!(
                    "watch did not deliver everything; saw ADDED {}, DELETED {:?}",
                    seen.get("ADDED").map_or(0, BTreeSet::len),
                    seen.get("DELETED")
                )
            });
        let Ok(line) = rx.recv_timeout(left) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
        let kind = match v["type"].as_str() {
            Some("ADDED") => "ADDED",
            Some("MODIFIED") => "MODIFIED",
            Some("DELETED") => "DELETED",
            other => panic!("unexpected event type {other:?}"),
        };
        let name = v["object"]["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let revision: u64 = v["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("resourceVersion");
        assert!(
            revision >= last_revision,
            "{kind} {name} at {revision} after {last_revision}"
        );
        last_revision = revision;
        seen.entry(kind).or_default().insert(name);
    }
    seen
}

fn names(it: impl Iterator<Item = usize>) -> BTreeSet<String> {
    it.map(|i| format!("w-{i}")).collect()
}

fn every_watcher_sees_every_change(server: &Server) {
    let mut all = server.spawn_shoal(&["get", "tasks", "-w", "-o", "json"]);
    let all_lines = lines_of(&mut all);
    // Reads nothing until the end: its pipe fills, then the server's buffers.
    let mut slow = server.spawn_shoal(&["get", "tasks", "-l", "app=x", "-w", "-o", "json"]);
    std::thread::sleep(Duration::from_millis(500));

    apply(server, &manifests(0..TASKS, &[]));
    ok(server.shoal(&["delete", "task", "w-0"]));
    ok(server.shoal(&["delete", "task", "w-2"]));
    // w-4 leaves the slow watcher's selector: it sees that as a deletion.
    apply(server, &manifests(4..5, &[4]));

    let everything = names(0..TASKS);
    let seen = collect(&all_lines, |s| {
        s.get("ADDED") == Some(&everything) && s.get("DELETED").is_some_and(|d| d.len() == 2)
    });
    assert_eq!(seen["DELETED"], names([0, 2].into_iter()));

    let slow_lines = lines_of(&mut slow);
    let evens = names((0..TASKS).step_by(2));
    let seen = collect(&slow_lines, |s| {
        s.get("ADDED") == Some(&evens) && s.get("DELETED").is_some_and(|d| d.len() == 3)
    });
    assert_eq!(seen["DELETED"], names([0, 2, 4].into_iter()));
    let _ = all.kill();
    let _ = slow.kill();
}

#[test]
fn watches_keep_up_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(data.path());
    every_watcher_sees_every_change(&server);
}

#[test]
fn watches_that_fall_behind_the_cache_carry_on_from_etcd() {
    let etcd = Etcd::start();
    let server = Server::etcd_with(
        &etcd.address(),
        "watch-behind",
        &["--watch-cache-size", "4"],
    );
    every_watcher_sees_every_change(&server);
}
