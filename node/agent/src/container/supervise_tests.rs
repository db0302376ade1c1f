//! Supervision against the fake runtime on paused time: no root, no runc.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::{Task, TaskState, TaskStatus};
use tokio_util::sync::CancellationToken;

use super::runtime::fake::FakeRuntime;
use super::supervise::Supervisor;
use crate::session::Reporter;

fn task(spec: serde_json::Value) -> Task {
    let mut spec = spec;
    spec["image"] = "busybox".into();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.dev/v1", "kind": "Task",
        "metadata": {"name": "web.1", "uid": "u1"},
        "spec": spec,
    }))
    .expect("a valid task")
}

/// Supervises `task` to its end (or until `stop_after`), returning every reported state
/// with its message and the runtime's calls.
async fn supervise(
    rt: &FakeRuntime,
    task: Task,
    stop_after: Option<Duration>,
) -> (Vec<TaskStatus>, Vec<String>) {
    let (reporter, mut rx) = Reporter::for_test();
    let current = Arc::new(Mutex::new(Arc::new(task)));
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();
    if let Some(after) = stop_after {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stop.cancel();
        });
    }
    let supervisor = Supervisor {
        rt,
        node_grace: Duration::from_secs(10),
        task: &current,
        reporter: &reporter,
        dir: dir.path(),
    };
    // Paused time runs ahead, so a supervisor that never ends fails here, not hangs.
    tokio::time::timeout(Duration::from_secs(3600), supervisor.supervise(stop, false))
        .await
        .expect("supervision ends within an hour of (paused) time");
    let mut reports = Vec::new();
    while let Ok(r) = rx.try_recv() {
        reports.push(serde_json::from_str(&r.status_json).expect("status JSON"));
    }
    (reports, rt.calls())
}

fn last(reports: &[TaskStatus]) -> &TaskStatus {
    reports.last().expect("at least one report")
}

#[tokio::test(start_paused = true)]
async fn a_container_that_exits_zero_completes() {
    let rt = FakeRuntime::default();
    rt.exit_with(&[0]);
    let (reports, calls) = supervise(&rt, task(serde_json::json!({})), None).await;
    assert_eq!(reports[0].state, TaskState::Running);
    assert_eq!(last(&reports).state, TaskState::Complete);
    assert_eq!(last(&reports).exit_code, Some(0));
    assert_eq!(calls, ["attach shoal-u1", "run shoal-u1"]);
}

#[tokio::test(start_paused = true)]
async fn failing_health_checks_fail_the_task_after_its_retries() {
    let rt = FakeRuntime::default();
    rt.checks(&[true, false, false, false]);
    let spec =
        serde_json::json!({"healthcheck": {"cmd": ["true"], "interval": "1s", "retries": 3}});
    let (reports, calls) = supervise(&rt, task(spec), None).await;
    let healthy = reports
        .iter()
        .any(|r| r.health == Some(shoal_api::Health::Healthy));
    assert!(healthy, "healthy once first: {reports:?}");
    let end = last(&reports);
    assert_eq!(end.state, TaskState::Failed);
    assert_eq!(end.health, Some(shoal_api::Health::Unhealthy));
    assert!(
        end.message.contains("failed 3 times in a row"),
        "{}",
        end.message
    );
    assert_eq!(calls.iter().filter(|c| c.starts_with("exec")).count(), 4);
    assert!(
        calls.contains(&"kill shoal-u1 TERM".to_string()),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_container_restarts_in_place_up_to_its_attempts() {
    let rt = FakeRuntime::default();
    rt.exit_with(&[1, 1, 1]);
    let spec = serde_json::json!({"restart": {"condition": "on-failure", "delay": "2s", "maxAttempts": 2}});
    let (reports, calls) = supervise(&rt, task(spec), None).await;
    let restarts = calls.iter().filter(|c| c.starts_with("restart")).count();
    assert_eq!(restarts, 2, "{calls:?}");
    let end = last(&reports);
    assert_eq!(end.state, TaskState::Failed);
    assert_eq!(end.restart_count, 2);
    assert!(reports
        .iter()
        .any(|r| r.state == TaskState::Starting && r.message.contains("restart 1 in 2s")));
}

#[tokio::test(start_paused = true)]
async fn a_stop_kills_a_container_that_ignores_sigterm_after_the_grace_period() {
    let rt = FakeRuntime::default();
    rt.ignore_term();
    let started = tokio::time::Instant::now();
    let (reports, calls) = supervise(
        &rt,
        task(serde_json::json!({})),
        Some(Duration::from_secs(1)),
    )
    .await;
    let end = last(&reports);
    assert_eq!(end.state, TaskState::Shutdown);
    assert_eq!(end.exit_code, Some(137));
    assert_eq!(
        &calls[2..],
        ["kill shoal-u1 TERM", "kill shoal-u1 KILL"],
        "{calls:?}"
    );
    // One second running, then the node's ten-second grace period.
    assert!(started.elapsed() >= Duration::from_secs(11));
    assert!(started.elapsed() < Duration::from_secs(12));
}
