//! `shoal rm`: deletes ended tasks; a running one with `--force`, which kills it first
//! and waits until it is gone, as `docker rm -f`.

use std::process::ExitCode;
use std::time::Duration;

use shoal_wire::pb;

use super::tasks::{ended, state, task_json};
use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    tasks: Vec<String>,
    /// Kill running tasks first instead of refusing.
    #[arg(short, long)]
    force: bool,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let mut client = ctx.client().await?;
    for name in &a.tasks {
        let t = task_json(ctx, name).await?;
        if !ended(&t) {
            if !a.force {
                anyhow::bail!("task/{name} is {}: stop it first, or rm --force", state(&t));
            }
            super::stop::stop_and_wait(ctx, name, Some(Duration::ZERO)).await?;
        }
        client
            .delete(pb::DeleteRequest {
                kind: "Task".into(),
                name: name.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}
