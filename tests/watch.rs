//! Watches under load, on both stores: every watcher sees every change it asked for
//! (single writes and batches written at one revision), in order, whether it keeps up with the server's watch cache or falls far behind it (a
//! client that reads nothing until the end; with a tiny cache buffer it is served from
//! the store's history instead).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use support::*;

const TASKS: usize = 800;

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

/// What a watcher has seen: the names per event type, and the last resourceVersion of
/// each object it holds (deleted ones dropped), as an informer's cache would.
#[derive(Default)]
struct Seen {
    names: HashMap<&'static str, BTreeSet<String>>,
    latest: BTreeMap<String, u64>,
}

/// The current resourceVersion of each task matching `selector`.
fn listed(server: &Server, selector: &str) -> BTreeMap<String, u64> {
    let list = json(server.shoal(&["get", "tasks", "-l", selector, "-o", "json"]));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let name = t["metadata"]["name"].as_str().expect("name").to_string();
            let rv = t["metadata"]["resourceVersion"].as_str().expect("rv");
            (name, rv.parse().expect("numeric rv"))
        })
        .collect()
}

/// Reads a watch until what it holds equals a fresh list of `selector` (every object at
/// its latest version, nothing extra) and `done` holds; revisions must never go back.
fn follow(
    rx: &Receiver<String>,
    server: &Server,
    selector: &str,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let mut seen = Seen::default();
    let mut last_revision = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
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
            if kind == "DELETED" {
                seen.latest.remove(&name);
            } else {
                seen.latest.insert(name.clone(), revision);
            }
            seen.names.entry(kind).or_default().insert(name);
        }
        if done(&seen) && seen.latest == listed(server, selector) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the watch of {selector:?} never matched the list: it holds {} objects, the list {}",
            seen.latest.len(),
            listed(server, selector).len()
        );
    }
}

/// A `get -w` process, killed however the test ends.
fn names(it: impl Iterator<Item = usize>) -> BTreeSet<String> {
    it.map(|i| format!("w-{i}")).collect()
}

fn every_watcher_sees_every_change(server: &Server) {
    // Nodes, so that tasks are bound and report running: more batched writes.
    let _nodes = server.sim(&["--nodes", "3", "--start-delay", "10ms"]);
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
    // A service's tasks are created in batches: many objects at one store revision.
    apply(
        server,
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: bulk}\nspec: {image: local/busybox:1, replicas: 400}\n",
    );

    let mut everything = names(0..TASKS);
    everything.extend((1..=400).map(|i| format!("bulk.{i}")));
    let seen = follow(&all_lines, server, "", |s| {
        s.names.get("ADDED") == Some(&everything)
    });
    assert_eq!(seen.names["DELETED"], names([0, 2].into_iter()));

    let slow_lines = lines_of(&mut slow);
    let evens = names((0..TASKS).step_by(2));
    let seen = follow(&slow_lines, server, "app=x", |s| {
        s.names.get("ADDED") == Some(&evens)
    });
    assert_eq!(seen.names["DELETED"], names([0, 2, 4].into_iter()));
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

/// `get -w` and `events -w` keep printing across kill -9 and restart of the server:
/// they reconnect, say so on stderr, and resume after the last revision they saw, so
/// nothing is printed twice and nothing is missed.
#[test]
fn watches_carry_on_across_a_server_crash() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = Server::embedded(data.path());
    let service = |name: &str, replicas: u32| {
        format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{image: x, replicas: {replicas}}}\n")
    };
    apply(&server, &service("before", 0));
    let mut get = server.spawn_shoal(&["get", "services", "-w", "-o", "name"]);
    let got = lines_of(&mut get);
    let mut events = server.spawn_shoal(&["events", "-w", "-o", "name"]);
    let evented = lines_of(&mut events);
    let mut seen = Vec::new();
    read_until(&got, &mut seen, |l| l == "service/before added");
    std::thread::sleep(Duration::from_millis(500));
    let before_crash: Vec<String> = evented.try_iter().collect();
    server.crash_and_restart();
    // One task that fits nowhere (there are no nodes): a Warning after the crash.
    apply(&server, &service("after", 1));
    read_until(&got, &mut seen, |l| l == "service/after added");
    assert_eq!(
        seen.iter().filter(|l| *l == "service/before added").count(),
        1,
        "nothing twice: {seen:?}"
    );
    let mut after_crash = Vec::new();
    read_until(&evented, &mut after_crash, |l| l.starts_with("event/"));
    assert!(
        after_crash.iter().all(|l| !before_crash.contains(l)),
        "events printed twice: {after_crash:?} after {before_crash:?}"
    );
    drop((get, events));
}
