use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_api::{GitSync, SYNC_REQUEST_ANNOTATION};

use serde_json::json;

use super::patch::{get, patch};
use super::Context;
use crate::Outcome;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Sync now rather than at the next interval, and wait for the result.
    Sync {
        name: String,
        /// Ask for the sync and return without waiting.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the sync to finish.
        #[arg(long, default_value = "2m", value_parser = super::server::parse_duration)]
        timeout: Duration,
    },
    /// Stop syncing; the cluster keeps what was last applied.
    Suspend { name: String },
    /// Start syncing again, at once.
    Resume { name: String },
}

pub async fn run(ctx: &Context, c: Command) -> Outcome {
    match c {
        Command::Sync {
            name,
            no_wait,
            timeout,
        } => sync(ctx, &name, no_wait, timeout).await,
        Command::Suspend { name } => set_suspend(ctx, &name, true).await,
        Command::Resume { name } => set_suspend(ctx, &name, false).await,
    }
}

async fn set_suspend(ctx: &Context, name: &str, suspend: bool) -> Outcome {
    patch(ctx, "GitSync", name, json!({"spec": {"suspend": suspend}})).await?;
    println!(
        "gitsync/{name} {}",
        if suspend { "suspended" } else { "resumed" }
    );
    Ok(ExitCode::SUCCESS)
}

async fn sync(ctx: &Context, name: &str, no_wait: bool, timeout: Duration) -> Outcome {
    let current: GitSync = get(ctx, "GitSync", name).await?.to_typed()?;
    if current.spec.suspend {
        anyhow::bail!("gitsync/{name} is suspended; `shoal gitsync resume {name}` syncs it");
    }
    // A new value each time is what asks; the time makes it readable too.
    let request = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let annotations = json!({ (SYNC_REQUEST_ANNOTATION): request });
    patch(
        ctx,
        "GitSync",
        name,
        json!({"metadata": {"annotations": annotations}}),
    )
    .await?;
    if no_wait {
        println!("gitsync/{name} sync requested");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("gitsync/{name}: fetching {} ...", current.spec.url);
    let started = Instant::now();
    loop {
        let gs: GitSync = get(ctx, "GitSync", name)
            .await?
            .to_typed()
            .context("reading the GitSync")?;
        let status = gs.status.unwrap_or_default();
        if status.last_handled_sync_request.as_deref() == Some(request.as_str()) {
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
            let message = ready.map(|c| c.message.clone()).unwrap_or_default();
            if ready.is_some_and(|c| c.status == shoal_api::ConditionStatus::True) {
                println!("gitsync/{name} synced: {message}");
                return Ok(ExitCode::SUCCESS);
            }
            let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
            anyhow::bail!("gitsync/{name} failed to sync ({reason}):\n{message}");
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "gitsync/{name} did not finish syncing within {}s (is the server's controller running?)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
