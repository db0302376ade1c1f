//! Orchestration end to end: a real server (embedded store and etcd) with simulated
//! nodes speaking the real agent API. Replicas converge, scale, roll out, roll back,
//! jobs complete, cron ticks, drains empty nodes, dead nodes' tasks move, and an
//! impossible constraint says so once, on the service.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn live_running(server: &Server, service: &str) -> Vec<Value> {
    tasks(server, service)
        .into_iter()
        .filter(|t| is_live(t) && state(t) == "running")
        .collect()
}

fn service(server: &Server, name: &str) -> Value {
    json(server.shoal(&["get", "svc", name, "-o", "json"]))
}

fn has_event(server: &Server, reference: &str, reason: &str) -> bool {
    events_for(server, reference)
        .iter()
        .any(|e| e["reason"] == reason)
}

fn web(image: &str, replicas: u32, update: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  image: {image}\n  replicas: {replicas}\n  update: {update}\n"
    )
}

/// The stop-first update policy the web service starts with.
const UPDATE: &str = "{monitor: 1s, parallelism: 1, order: stop-first, failureAction: rollback}";

/// What the scenarios share: a server and four simulated nodes (`a-0..a-3`).
struct Cluster<'a> {
    server: &'a Server,
    first: Sim,
}

fn scenarios(server: &Server) {
    let first = server.sim(&[
        "--nodes",
        "4",
        "--prefix",
        "a",
        "--start-delay",
        "50ms",
        "--job-duration",
        "300ms",
        "--fail-images",
        "bad/*",
    ]);
    wait("4 nodes ready", 20, || {
        let nodes = json(server.shoal(&["get", "nodes", "-o", "json"]));
        nodes["items"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["status"]["state"] == "ready").count() == 4)
    });
    let mut cluster = Cluster { server, first };
    run_scenarios(
        &mut cluster,
        scenarios![
            replicas_converge_and_spread_across_nodes,
            scale_up_and_down,
            a_stop_first_rolling_update_one_at_a_time,
            a_start_first_update_runs_old_and_new_side_by_side,
            a_failing_version_is_rolled_back,
            rollout_undo_goes_back_a_revision_keeping_the_scale,
            a_job_runs_to_completion,
            cron_starts_a_run_per_tick,
            an_impossible_constraint_says_why_on_the_service,
            drain_empties_a_node_and_activate_brings_it_back,
            a_dead_node_s_tasks_are_replaced_on_the_others,
        ],
    );
}

fn replicas_converge_and_spread_across_nodes(c: &mut Cluster) {
    let server = c.server;
    // Replicas converge.
    apply(server, &web("good/web:1", 3, UPDATE));
    wait("3 running", 20, || live_running(server, "web").len() == 3);
    let svc = service(server, "web");
    assert_eq!(svc["status"]["runningReplicas"], 3, "{svc}");
    let names: Vec<String> = tasks(server, "web")
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    for n in ["web.1", "web.2", "web.3"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let spread: std::collections::HashSet<String> = live_running(server, "web")
        .iter()
        .map(|t| t["spec"]["node"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(spread.len(), 3, "a service's tasks spread across nodes");
}

fn scale_up_and_down(c: &mut Cluster) {
    let server = c.server;
    // Scale up and down.
    assert!(ok(server.shoal(&["scale", "service/web=6"])).contains("scaled to 6"));
    wait("6 running", 20, || live_running(server, "web").len() == 6);
    ok(server.shoal(&["scale", "service/web=2"]));
    wait("2 live tasks", 20, || {
        tasks(server, "web").iter().filter(|t| is_live(t)).count() == 2
    });
    assert!(
        has_event(server, "service/web", "ScaledUp")
            && has_event(server, "service/web", "ScaledDown")
    );
}

fn a_stop_first_rolling_update_one_at_a_time(c: &mut Cluster) {
    let server = c.server;
    // A rolling update, stop-first, one at a time; rollout status follows it.
    apply(server, &web("good/web:2", 2, UPDATE));
    let status = server.shoal(&["rollout", "status", "service/web"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("successfully rolled out"),
        "{}",
        stdout(&status)
    );
    let live: Vec<Value> = tasks(server, "web").into_iter().filter(is_live).collect();
    assert!(
        live.iter()
            .all(|t| t["spec"]["image"] == "good/web:2" && state(t) == "running"),
        "{live:?}"
    );
    assert!(
        has_event(server, "service/web", "UpdateStarted")
            && has_event(server, "service/web", "UpdateCompleted")
    );
    assert!(
        tasks(server, "web")
            .iter()
            .any(|t| !is_live(t) && t["spec"]["image"] == "good/web:1"),
        "old tasks kept as history"
    );
}

fn a_start_first_update_runs_old_and_new_side_by_side(c: &mut Cluster) {
    let server = c.server;
    // start-first: the new task runs before the old one stops.
    apply(
        server,
        &web(
            "good/web:3",
            2,
            "{monitor: 1s, parallelism: 1, order: start-first, failureAction: rollback}",
        ),
    );
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let all = tasks(server, "web");
        most = most.max(
            all.iter()
                .filter(|t| state(t) == "running" && t["spec"]["desiredState"] != "shutdown")
                .count(),
        );
        let done = all
            .iter()
            .filter(|t| is_live(t))
            .all(|t| t["spec"]["image"] == "good/web:3" && state(t) == "running")
            && service(server, "web")["status"]["update"]["state"] == "completed";
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        most > 2,
        "start-first runs old and new side by side (saw at most {most} running)"
    );
    wait("start-first rollout complete", 30, || {
        service(server, "web")["status"]["update"]["state"] == "completed"
    });
}

fn a_failing_version_is_rolled_back(c: &mut Cluster) {
    let server = c.server;
    // A failing version is rolled back automatically.
    apply(server, &web("bad/web:4", 2, UPDATE));
    let status = server.shoal(&["rollout", "status", "service/web"]);
    assert_eq!(
        status.status.code(),
        Some(1),
        "a rolled-back rollout is not a success: {}",
        stdout(&status)
    );
    wait("rolled back", 30, || {
        let s = service(server, "web");
        s["spec"]["image"] == "good/web:3" && s["status"]["update"]["state"] == "rollback_completed"
    });
    wait("2 running after rollback", 30, || {
        let live = live_running(server, "web");
        live.len() == 2 && live.iter().all(|t| t["spec"]["image"] == "good/web:3")
    });
    assert!(
        has_event(server, "service/web", "RollbackStarted")
            && has_event(server, "service/web", "RolledBack")
    );
    let history = ok(server.shoal(&["rollout", "history", "service/web"]));
    assert!(
        history.contains("bad/web:4") && history.contains("rollback"),
        "{history}"
    );
}

fn rollout_undo_goes_back_a_revision_keeping_the_scale(c: &mut Cluster) {
    let server = c.server;
    let undo = |image: &str, extra: &str| {
        format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: undo}}\nspec:\n  image: {image}\n  replicas: 1\n  update: {UPDATE}\n{extra}")
    };
    apply(server, &undo("good/web:1", ""));
    wait("undo at 1", 20, || live_running(server, "undo").len() == 1);
    // The second revision adds a field the first lacks: undo must remove it.
    apply(server, &undo("good/web:2", "  env: {ADDED: \"yes\"}\n"));
    ok(server.shoal(&["rollout", "status", "service/undo"]));
    ok(server.shoal(&["scale", "service/undo=2"]));
    let said = ok(server.shoal(&["rollout", "undo", "service/undo"]));
    assert!(said.contains("good/web:1"), "{said}");
    let spec = &service(server, "undo")["spec"];
    assert_eq!(spec["image"], "good/web:1", "{spec}");
    assert_eq!(spec["replicas"], 2, "the scale stays: {spec}");
    assert!(spec.get("env").is_none(), "the later field is gone: {spec}");
    wait("2 running the first revision", 30, || {
        let live = live_running(server, "undo");
        live.len() == 2 && live.iter().all(|t| t["spec"]["image"] == "good/web:1")
    });
    ok(server.shoal(&["delete", "service", "undo"]));
}

fn a_job_runs_to_completion(c: &mut Cluster) {
    let server = c.server;
    // A job runs to completion.
    apply(server, "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: batch}\nspec: {image: tools:1, mode: job, job: {completions: 3, parallelism: 2}}\n");
    wait("job complete", 30, || {
        let s = service(server, "batch");
        s["status"]["succeeded"] == 3
            && s["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
            })
    });
    assert!(has_event(server, "service/batch", "JobCompleted"));
}

fn cron_starts_a_run_per_tick(c: &mut Cluster) {
    let server = c.server;
    // Cron: a run per tick (a six-field schedule ticks every two seconds here).
    apply(server, "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: tick}\nspec: {image: tools:1, mode: cron, cron: {schedule: \"*/2 * * * * *\", history: 2}}\n");
    wait("two cron runs", 30, || {
        events_for(server, "service/tick")
            .iter()
            .filter(|e| e["reason"] == "RunStarted")
            .count()
            >= 2
    });
    wait("finished runs beyond history are reaped", 30, || {
        let runs: std::collections::HashSet<String> = tasks(server, "tick")
            .iter()
            .filter(|t| state(t) == "complete")
            .filter_map(|t| {
                t["metadata"]["labels"]["shoal.dev/run"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        !runs.is_empty() && runs.len() <= 2
    });
    ok(server.shoal(&["delete", "service", "tick"]));
}

fn an_impossible_constraint_says_why_on_the_service(c: &mut Cluster) {
    let server = c.server;
    // An impossible constraint: 50 tasks pending with the reason; the service says why
    // (Progressing False, Unschedulable) and carries one Warning, not one per task.
    apply(server, "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: nowhere}\nspec: {image: x, replicas: 50, placement: {constraints: [\"node.labels.zone == mars\"]}}\n");
    wait("pending with a reason", 20, || {
        let all = tasks(server, "nowhere");
        all.len() == 50
            && all.iter().all(|t| {
                state(t) == "pending"
                    && t["status"]["message"].as_str().is_some_and(|m| {
                        m.contains("no suitable node") && m.contains("node.labels.zone == mars")
                    })
            })
    });
    wait("the service says why", 20, || {
        service(server, "nowhere")["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "Progressing"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
                    && c["message"].as_str().is_some_and(|m| {
                        m.starts_with("50 tasks cannot be placed: ")
                            && m.contains("constraint node.labels.zone == mars")
                    })
            })
    });
    let described = ok(server.shoal(&["describe", "service", "nowhere"]));
    assert!(described.contains("Unschedulable"), "{described}");
    std::thread::sleep(Duration::from_secs(6)); // several scheduling rounds
    let warnings: Vec<Value> = events_for(server, "service/nowhere")
        .into_iter()
        .filter(|e| e["reason"] == "FailedScheduling")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0]["count"], 1,
        "one Warning, not one per retry: {warnings:?}"
    );
    assert_eq!(warnings[0]["type"], "Warning");
    assert!(
        warnings[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("its tasks cannot be placed: ")),
        "{warnings:?}"
    );
    assert!(
        events_for(server, "task/nowhere.1")
            .iter()
            .all(|e| e["reason"] != "FailedScheduling"),
        "no Warning per task"
    );
    ok(server.shoal(&["delete", "service", "nowhere"]));
}

fn drain_empties_a_node_and_activate_brings_it_back(c: &mut Cluster) {
    let server = c.server;
    // Drain empties a node; activate brings it back.
    let on_node = |node: &str| {
        tasks(server, "web")
            .iter()
            .filter(|t| {
                is_live(t)
                    && t["spec"]["node"] == node
                    && !matches!(state(t), "shutdown" | "failed" | "complete" | "orphaned")
            })
            .count()
    };
    let busy = live_running(server, "web")[0]["spec"]["node"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ok(server.shoal(&["node", "drain", &busy])).contains("drained"));
    wait("drained node empty", 30, || {
        on_node(&busy) == 0 && live_running(server, "web").len() == 2
    });
    let node = json(server.shoal(&["get", "node", &busy, "-o", "json"]));
    assert_eq!(node["spec"]["availability"], "drain");
    ok(server.shoal(&["node", "activate", &busy]));
}

fn a_dead_node_s_tasks_are_replaced_on_the_others(c: &mut Cluster) {
    let server = c.server;
    // A node process dies: its tasks are replaced on the others.
    let _second = server.sim(&["--nodes", "2", "--prefix", "b", "--start-delay", "50ms"]);
    wait("b nodes ready", 20, || {
        let nodes = json(server.shoal(&["get", "nodes", "-o", "json"]));
        nodes["items"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["status"]["state"] == "ready").count() == 6)
    });
    c.first.kill();
    wait("a nodes down", 30, || {
        let nodes = json(server.shoal(&["get", "nodes", "-o", "json"]));
        nodes["items"].as_array().is_some_and(|n| {
            n.iter()
                .filter(|n| {
                    n["metadata"]["name"]
                        .as_str()
                        .is_some_and(|x| x.starts_with("a-"))
                })
                .all(|n| n["status"]["state"] == "down")
        })
    });
    wait("web running on b nodes", 30, || {
        let live = live_running(server, "web");
        live.len() == 2
            && live.iter().all(|t| {
                t["spec"]["node"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("b-"))
            })
    });
    assert!(has_event(server, "node/a-0", "NodeDown"));
    assert!(
        tasks(server, "web").iter().any(|t| state(t) == "orphaned"),
        "the dead node's tasks are marked orphaned"
    );
}

#[test]
fn orchestration_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded_with(data.path(), &["--heartbeat-period", "1s"]);
    scenarios(&server);
}

#[test]
fn orchestration_on_etcd() {
    let etcd = Etcd::start();
    let server = Server::etcd_with(
        &etcd.address(),
        "orchestration",
        &["--heartbeat-period", "1s"],
    );
    scenarios(&server);
}
