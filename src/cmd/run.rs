//! `shoal run`: a one-off Task, as `docker run` (its container flags are in
//! `run_flags.rs`); attached, it follows the output and exits with the task's code.

use std::process::ExitCode;
use std::time::Duration;

use shoal_wire::pb;

use super::tasks::{ended, state, task_json};
use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Start it and print its name, without waiting.
    #[arg(short, long)]
    detach: bool,
    /// The task's name (default: run-<random>).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    container: super::run_flags::ContainerFlags,
    /// Delete the task once it has ended.
    #[arg(long)]
    rm: bool,
    image: String,
    /// The command: replaces the image's entrypoint and cmd, or with --entrypoint, its
    /// arguments. Everything after the image belongs to it, as with `docker run`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let name = a.name.unwrap_or_else(|| format!("run-{}", random_suffix()));
    let mut spec = a.container.spec_fields()?;
    spec.insert("image".into(), a.image.clone().into());
    spec.insert("command".into(), a.command.clone().into());
    let task = serde_json::json!({
        "apiVersion": "shoal.dev/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": spec,
    });
    let mut client = ctx.client().await?;
    let results = client
        .apply(pb::ApplyRequest {
            manifests: vec![pb::Manifest {
                json: task.to_string(),
                source: "shoal run".into(),
            }],
            dry_run: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner()
        .results;
    if results.first().is_some_and(|r| r.outcome != "created") {
        anyhow::bail!("task/{name} already exists; give another --name");
    }
    if a.detach {
        println!("{name}");
        return Ok(ExitCode::SUCCESS);
    }
    // Follow its output until it ends, then exit with its exit code.
    loop {
        let t = task_json(ctx, &name).await?;
        if state(&t) == "running" || ended(&t) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = super::logs::Args::for_task(&name);
    super::logs::run(ctx, logs).await?;
    let t = loop {
        let t = task_json(ctx, &name).await?;
        if ended(&t) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if state(&t) == "rejected" {
        eprintln!(
            "error: {}",
            t["status"]["message"].as_str().unwrap_or("rejected")
        );
    }
    if a.rm {
        client
            .delete(pb::DeleteRequest {
                kind: "Task".into(),
                name: name.clone(),
            })
            .await?;
    }
    let code = t["status"]["exitCode"].as_i64().unwrap_or(125);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
