//! The docker-style commands over Tasks: `shoal run` (a one-off Task; its container
//! flags are in `run_flags.rs`), `ps`, `stop`, `start`, `rm`, `rename`.

use std::process::ExitCode;
use std::time::Duration;

use shoal_api::DynamicObject;
use shoal_wire::pb;

use super::modify::{get, modify, spec_mut};
use super::Context;
use crate::output::{age, parse_object};
use crate::{Format, Outcome};

#[derive(clap::Args)]
pub struct RunArgs {
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

#[derive(clap::Args)]
pub struct PsArgs {
    /// Ended tasks too (and service tasks' history).
    #[arg(short, long)]
    all: bool,
}

#[derive(clap::Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    tasks: Vec<String>,
    /// rm: stop running tasks first instead of refusing.
    #[arg(short, long)]
    force: bool,
}

fn state(t: &serde_json::Value) -> &str {
    t["status"]["state"].as_str().unwrap_or("pending")
}

fn ended(t: &serde_json::Value) -> bool {
    matches!(
        state(t),
        "complete" | "failed" | "rejected" | "shutdown" | "orphaned"
    )
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

async fn task_json(ctx: &Context, name: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(get(ctx, "Task", name).await?)?)
}

pub async fn run(ctx: &Context, a: RunArgs) -> Outcome {
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

pub async fn ps(ctx: &Context, a: PsArgs) -> Outcome {
    let items = ctx
        .client()
        .await?
        .list(pb::ListRequest {
            kind: "Task".into(),
            label_selector: String::new(),
            involved_object: String::new(),
        })
        .await?
        .into_inner()
        .items;
    let mut tasks: Vec<DynamicObject> = items
        .iter()
        .map(|j| parse_object(j))
        .collect::<anyhow::Result<_>>()?;
    tasks.retain(|o| {
        let t = serde_json::to_value(o).unwrap_or_default();
        a.all || !ended(&t)
    });
    if matches!(ctx.format, Some(Format::Json | Format::Yaml | Format::Name)) {
        return crate::output::print_list("Task", &tasks, ctx.format).map(|_| ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<40} {:<24} {:<10} {:<12} {:<14} {:<15} {:<22} {:>6}",
        "NAME", "IMAGE", "COMMAND", "STATE", "NODE", "CONTAINER", "ADDRESS", "PORTS", "AGE"
    );
    for o in &tasks {
        let t = serde_json::to_value(o)?;
        let command: Vec<&str> = t["spec"]["command"]
            .as_array()
            .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let mut command = command.join(" ");
        if command.chars().count() > 22 {
            command = command.chars().take(21).collect();
            command.push('…');
        }
        let container: String = t["status"]["containerId"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(12)
            .collect();
        let shown_state = match t["status"]["exitCode"].as_i64() {
            Some(code) if ended(&t) => format!("{} ({code})", state(&t)),
            _ => state(&t).to_string(),
        };
        println!(
            "{:<24} {:<40} {:<24} {:<10} {:<12} {:<14} {:<15} {:<22} {:>6}",
            o.metadata.name,
            t["spec"]["image"].as_str().unwrap_or(""),
            command,
            shown_state,
            t["spec"]["node"].as_str().unwrap_or("-"),
            container,
            t["status"]["addresses"][0].as_str().unwrap_or("-"),
            ports(&t),
            age(o
                .metadata
                .creation_timestamp
                .map(|c| c.to_rfc3339())
                .as_deref())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Published ports as docker ps shows them: `0.0.0.0:8080->80/tcp`.
fn ports(t: &serde_json::Value) -> String {
    let shown: Vec<String> = t["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let published = p["published"].as_u64()?;
            let protocol = p["protocol"].as_str().unwrap_or("tcp");
            Some(format!("0.0.0.0:{published}->{}/{protocol}", p["target"]))
        })
        .collect();
    if shown.is_empty() {
        "-".into()
    } else {
        shown.join(",")
    }
}

/// Asks the tasks' nodes to stop them (SIGTERM, then SIGKILL after the grace period).
pub async fn stop(ctx: &Context, a: NamesArgs) -> Outcome {
    for name in &a.tasks {
        modify(ctx, "Task", name, |obj| {
            spec_mut(obj)?.insert("desiredState".into(), "shutdown".into());
            Ok(())
        })
        .await?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs ended tasks again, in the same container (its writable layer and log kept), as
/// `docker start`; a task that still runs is left alone.
pub async fn start(ctx: &Context, a: NamesArgs) -> Outcome {
    for name in &a.tasks {
        let t = task_json(ctx, name).await?;
        if let Some(svc) = t["metadata"]["labels"]["shoal.dev/service"].as_str() {
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
            modify(ctx, "Task", name, |obj| {
                obj.metadata
                    .annotations
                    .insert(shoal_api::START_ANNOTATION.into(), asked.clone());
                spec_mut(obj)?.insert("desiredState".into(), "running".into());
                Ok(())
            })
            .await?;
        }
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct RenameArgs {
    task: String,
    new_name: String,
}

/// A new name for a standalone task; its container carries on (as `docker rename`).
pub async fn rename(ctx: &Context, a: RenameArgs) -> Outcome {
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

/// Deletes tasks; a running one only with --force (as `docker rm`).
pub async fn rm(ctx: &Context, a: NamesArgs) -> Outcome {
    let mut client = ctx.client().await?;
    for name in &a.tasks {
        let t = task_json(ctx, name).await?;
        if !ended(&t) && !a.force {
            anyhow::bail!("task/{name} is {}: stop it first, or rm --force", state(&t));
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
