use std::process::ExitCode;

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
}

pub async fn run(ctx: &Context, c: Command) -> Outcome {
    let (name, availability, done) = match &c {
        Command::Drain { name } => (name, "drain", "drained"),
        Command::Pause { name } => (name, "pause", "paused"),
        Command::Activate { name } => (name, "active", "activated"),
    };
    let change = serde_json::json!({"spec": {"availability": availability}});
    patch(ctx, "Node", name, change).await?;
    println!("node/{name} {done}");
    Ok(ExitCode::SUCCESS)
}
