//! Stopping a container: SIGTERM, the grace period, SIGKILL; and removing it.

use std::path::Path;
use std::time::Duration;

use shoal_api::Task;
use shoal_monitor::Exit;

use super::runtime::ContainerRuntime;

/// How long a stop waits for the container after SIGKILL before it gives up on its exit.
const AFTER_KILL: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// The time between SIGTERM and SIGKILL: the stop's own (`shoal stop -t`), else the
/// node's.
pub(super) fn stop_grace(node_grace: Duration, task: &Task) -> Duration {
    task.metadata
        .annotations
        .get(shoal_api::labels::STOP_GRACE_PERIOD)
        .and_then(|g| g.parse::<shoal_api::Duration>().ok())
        .map_or(node_grace, |g| g.0)
}

/// SIGTERM, then SIGKILL after `grace`; the exit once recorded.
pub(super) async fn stop_container(
    rt: &dyn ContainerRuntime,
    dir: &Path,
    id: &str,
    grace: Duration,
) -> Option<Exit> {
    rt.kill(id, "TERM").await;
    if let Some(exit) = wait_exit(rt, dir, grace).await {
        return Some(exit);
    }
    rt.kill(id, "KILL").await;
    wait_exit(rt, dir, AFTER_KILL).await
}

async fn wait_exit(rt: &dyn ContainerRuntime, dir: &Path, within: Duration) -> Option<Exit> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(e) = rt.exit(dir) {
            return Some(e);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stops the container if it runs, then removes it from the runtime with its files.
pub(super) async fn remove_container(
    rt: &dyn ContainerRuntime,
    id: &str,
    dir: &Path,
    grace: Duration,
) {
    if rt.exit(dir).is_none() && rt.exists(id).await {
        stop_container(rt, dir, id, grace).await;
    }
    rt.delete(id, dir).await;
}
