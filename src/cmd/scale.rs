use std::process::ExitCode;

use super::patch::{get, patch};
use super::{kind_and_name, Context};
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// service/NAME=REPLICAS, one or more.
    #[arg(required = true)]
    targets: Vec<String>,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    for target in &a.targets {
        let (reference, n) = target
            .rsplit_once('=')
            .ok_or_else(|| anyhow::anyhow!("{target:?}: expected service/NAME=REPLICAS"))?;
        let replicas: u32 = n
            .parse()
            .map_err(|_| anyhow::anyhow!("{target:?}: {n:?} is not a number of replicas"))?;
        let (kind, name) = kind_and_name(reference)?;
        if kind.kind != "Service" {
            anyhow::bail!("{target:?}: only services scale");
        }
        let live = get(ctx, kind.kind, &name).await?;
        let mode = live
            .body
            .get("spec")
            .and_then(|s| s.get("mode"))
            .and_then(|m| m.as_str())
            .unwrap_or("replicated");
        if mode != "replicated" {
            anyhow::bail!("service/{name} is mode {mode}; only replicated services scale");
        }
        let change = serde_json::json!({"spec": {"replicas": replicas}});
        patch(ctx, kind.kind, &name, change).await?;
        println!("service/{name} scaled to {replicas}");
    }
    Ok(ExitCode::SUCCESS)
}
