//! `shoal rename`: a standalone task under a new name, its container carrying on.

use std::process::ExitCode;

use shoal_wire::pb;

use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    task: String,
    new_name: String,
}

/// A new name for a standalone task; its container carries on (as `docker rename`).
pub async fn run(ctx: &Context, a: Args) -> Outcome {
    ctx.client()
        .await?
        .rename(pb::RenameRequest {
            kind: "Task".into(),
            name: a.task.clone(),
            new_name: a.new_name.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    println!("{}", a.new_name);
    Ok(ExitCode::SUCCESS)
}
