use std::process::ExitCode;

use shoal_wire::pb;

use super::patch::patch;
use super::Context;
use crate::Outcome;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Move tasks off the node and take no new ones.
    Drain { name: String },
    /// Take no new tasks; keep the running ones.
    Pause { name: String },
    /// Take tasks again.
    Activate { name: String },
    /// Remove a node from the cluster: its certificate stops working at once (its
    /// agent can no longer register, heartbeat or report), and its tasks are
    /// replaced elsewhere. A node that is up is refused unless --force.
    Rm {
        name: String,
        /// Remove it even while it is up (its agent is cut off at once).
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(ctx: &Context, c: Command) -> Outcome {
    let (name, availability, done) = match &c {
        Command::Drain { name } => (name, "drain", "drained"),
        Command::Pause { name } => (name, "pause", "paused"),
        Command::Activate { name } => (name, "active", "activated"),
        Command::Rm { name, force } => return remove(ctx, name, *force).await,
    };
    let change = serde_json::json!({"spec": {"availability": availability}});
    patch(ctx, "Node", name, change).await?;
    println!("node/{name} {done}");
    Ok(ExitCode::SUCCESS)
}

/// Swarm's `node rm`: a node that is up is refused without --force, saying why.
async fn remove(ctx: &Context, name: &str, force: bool) -> Outcome {
    let mut client = ctx.client().await?;
    let node = client
        .get(pb::GetRequest {
            kind: "Node".into(),
            name: name.into(),
        })
        .await?
        .into_inner();
    let node: serde_json::Value = serde_json::from_str(&node.json)?;
    let state = node["status"]["state"].as_str().unwrap_or("unknown");
    if state == "ready" && !force {
        anyhow::bail!(
            "node {name} is ready: its agent is running; stop it (or drain the node) first, or remove it anyway with --force"
        );
    }
    client
        .delete(pb::DeleteRequest {
            kind: "Node".into(),
            name: name.into(),
        })
        .await?;
    println!("node/{name} removed; its certificate is revoked");
    Ok(ExitCode::SUCCESS)
}
