//! What the docker-style commands over Tasks share (`run`, `ps`, `stop`, `start`,
//! `rm`, `rename` each live in a file of their own): reading a task and its state, and
//! waiting for its node to confirm a stop.

use std::time::{Duration, Instant};

use super::patch::get;
use super::Context;

pub fn state(t: &serde_json::Value) -> &str {
    t["status"]["state"].as_str().unwrap_or("pending")
}

pub fn ended(t: &serde_json::Value) -> bool {
    matches!(
        state(t),
        "complete" | "failed" | "rejected" | "shutdown" | "orphaned"
    )
}

pub async fn task_json(ctx: &Context, name: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(get(ctx, "Task", name).await?)?)
}

/// The node's default grace period, when a stop names none (`shoal agent
/// --stop-grace-period`).
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Beyond the grace period, time for the node to notice, kill and report.
const CONFIRM_SLACK: Duration = Duration::from_secs(20);

/// Waits until the task's container has stopped, as `docker stop` does: the task
/// ended, never reached a node, or is gone. A node that does not confirm in time is
/// one clear error.
pub async fn wait_stopped(
    ctx: &Context,
    name: &str,
    grace: Option<Duration>,
) -> anyhow::Result<()> {
    let bound = grace.unwrap_or(DEFAULT_GRACE) + CONFIRM_SLACK;
    let deadline = Instant::now() + bound;
    loop {
        let t = match task_json(ctx, name).await {
            Ok(t) => t,
            Err(e)
                if e.downcast_ref::<tonic::Status>()
                    .is_some_and(|s| s.code() == tonic::Code::NotFound) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let node = t["spec"]["node"].as_str().unwrap_or("").to_string();
        if ended(&t) || node.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let down = get(ctx, "Node", &node)
                .await
                .ok()
                .and_then(|n| serde_json::to_value(n).ok())
                .is_some_and(|n| n["status"]["state"] == "down");
            if down {
                anyhow::bail!(
                    "task/{name}: its node {node} is down; the container stops when its agent is back"
                );
            }
            anyhow::bail!(
                "task/{name}: node {node} has not confirmed the stop within {}s (is its agent running? `shoal get node {node}`)",
                bound.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
