//! `shoal start`: an ended or stopped standalone task runs again in its container.

use std::process::ExitCode;
use std::time::Duration;

use super::patch::patch;
use super::tasks::{ended, task_json};
use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    tasks: Vec<String>,
}

/// Runs ended tasks again, in the same container (its writable layer and log kept), as
/// `docker start`; a task that still runs is left alone.
pub async fn run(ctx: &Context, a: Args) -> Outcome {
    for name in &a.tasks {
        let t = task_json(ctx, name).await?;
        if let Some(svc) = t["metadata"]["labels"][shoal_api::labels::SERVICE].as_str() {
            anyhow::bail!(
                "task/{name} belongs to service/{svc}: scale or update the service instead"
            );
        }
        let mut t = t;
        let stopping = t["spec"]["desiredState"] == "shutdown";
        // A stop under way finishes first (it may take the grace period).
        for _ in 0..600 {
            if ended(&t) || !stopping {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            t = task_json(ctx, name).await?;
        }
        if ended(&t) || stopping {
            let asked = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let change = serde_json::json!({
                "metadata": {"annotations": {(shoal_api::START_ANNOTATION): asked}},
                "spec": {"desiredState": "running"},
            });
            patch(ctx, "Task", name, change).await?;
        }
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}
