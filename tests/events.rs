//! Reconcile events, watched live: the garbage collector deletes a Task whose owning
//! Service is gone, and `shoal events -w`, `get -w`, `events --for` and `describe` show it.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// The first line containing every needle.
fn wait_for_line(rx: &mpsc::Receiver<String>, needles: &[&str]) -> String {
    read_until(rx, &mut Vec::new(), |line| {
        needles.iter().all(|n| line.contains(n))
    })
}

#[test]
fn garbage_collection_is_reported_as_events() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(data.path());
    let mut events = server.spawn_shoal(&["events", "-w"]);
    let event_lines = lines_of(&mut events);
    let mut tasks = server.spawn_shoal(&["get", "tasks", "-w", "-o", "json"]);
    let task_lines = lines_of(&mut tasks);

    ok(server.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: local/busybox:1}\n",
    ));
    let svc = json(server.shoal(&["get", "svc", "web", "-o", "json"]));
    let uid = svc["metadata"]["uid"].as_str().expect("uid").to_string();
    let task = format!(
        "apiVersion: shoal.dev/v1\nkind: Task\nmetadata:\n  name: extra.1\n  labels: {{shoal.dev/service: web}}\n  \
         ownerReferences: [{{kind: Service, name: web, uid: {uid}, controller: true}}]\nspec: {{image: local/busybox:1}}\n"
    );
    ok(server.shoal_stdin(&["apply", "-f", "-"], &task));
    // The service makes its own web.1 too; this test follows the hand-made extra.1.
    let added = wait_for_line(&task_lines, &["extra.1", "\"ADDED\""]);
    let parsed: serde_json::Value = serde_json::from_str(&added).expect("json line");
    assert_eq!(parsed["type"], "ADDED");
    assert_eq!(parsed["object"]["metadata"]["name"], "extra.1");

    // The owner goes; the collector follows.
    ok(server.shoal(&["delete", "service", "web"]));
    wait_for_line(&task_lines, &["extra.1", "\"DELETED\""]);
    let line = wait_for_line(&event_lines, &["task/extra.1", "GarbageCollected"]);
    assert!(
        line.contains("GarbageCollected") && line.contains("its owner Service/web is gone"),
        "{line}"
    );
    assert!(line.contains("Normal"), "{line}");

    let listed = ok(server.shoal(&["events", "--for", "task/extra.1"]));
    assert!(listed.contains("GarbageCollected"), "{listed}");
    let warnings = ok(server.shoal(&["events", "--types", "Warning", "-o", "json"]));
    assert!(!warnings.contains("GarbageCollected"), "{warnings}");
    let as_json = json(server.shoal(&["events", "-o", "json"]));
    let items = as_json["items"].as_array().cloned().unwrap_or_default();
    let ev = items
        .iter()
        .find(|e| e["involvedObject"]["name"] == "extra.1" && e["reason"] == "GarbageCollected")
        .expect("a GarbageCollected event about extra.1");
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["count"], 1);
    assert_eq!(ev["source"], "garbage-collector");
}

#[test]
fn a_task_whose_owner_was_recreated_is_collected() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(data.path());
    let svc = "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: api}\nspec: {image: x}\n";
    ok(server.shoal_stdin(&["apply", "-f", "-"], svc));
    // Not a slot name of the service (`api.1`): the service controller would make that
    // one again, rightly, once the collector removed it.
    let task = "apiVersion: shoal.dev/v1\nkind: Task\nmetadata:\n  name: api-extra\n  \
                ownerReferences: [{kind: Service, name: api, uid: not-the-real-uid}]\nspec: {image: x}\n";
    ok(server.shoal_stdin(&["apply", "-f", "-"], task));
    let gone = eventually(Duration::from_secs(20), || {
        (!server.shoal(&["get", "task", "api-extra"]).status.success()).then_some(())
    });
    assert!(
        gone.is_some(),
        "a task owned by a different incarnation must be collected"
    );
    let orphan_free =
        "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {name: solo}\nspec: {image: x}\n";
    ok(server.shoal_stdin(&["apply", "-f", "-"], orphan_free));
    std::thread::sleep(Duration::from_secs(1));
    ok(server.shoal(&["get", "task", "solo"]));
}
