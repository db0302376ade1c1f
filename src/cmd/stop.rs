//! `shoal stop`: asks the tasks' nodes to stop them (SIGTERM, then SIGKILL after the
//! grace period) and waits until they have, as `docker stop` does.

use std::process::ExitCode;
use std::time::Duration;

use super::patch::patch;
use super::tasks::wait_stopped;
use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    tasks: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL (default: the node's, 10).
    #[arg(short = 't', long = "time", value_name = "SECONDS")]
    time: Option<u64>,
    /// Wait until the nodes confirm (`--wait=false`: ask and return, as before a node
    /// that is away can confirm).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let grace = a.time.map(Duration::from_secs);
    for name in &a.tasks {
        if a.wait {
            stop_and_wait(ctx, name, grace).await?;
        } else {
            ask_to_stop(ctx, name, grace).await?;
        }
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets the task's desired state to shutdown (with `grace`, if given, for this stop)
/// and waits until its node confirms.
pub async fn stop_and_wait(
    ctx: &Context,
    name: &str,
    grace: Option<Duration>,
) -> anyhow::Result<()> {
    ask_to_stop(ctx, name, grace).await?;
    wait_stopped(ctx, name, grace).await
}

async fn ask_to_stop(ctx: &Context, name: &str, grace: Option<Duration>) -> anyhow::Result<()> {
    let mut change = serde_json::json!({"spec": {"desiredState": "shutdown"}});
    if let Some(g) = grace {
        let annotations = serde_json::json!({
            (shoal_api::labels::STOP_GRACE_PERIOD): format!("{}s", g.as_secs()),
        });
        change["metadata"] = serde_json::json!({ "annotations": annotations });
    }
    patch(ctx, "Task", name, change).await?;
    Ok(())
}
