//! `shoal rollout status|history|undo service/NAME`.

use std::process::ExitCode;

use futures::StreamExt;
use shoal_api::{DynamicObject, Service, UpdateState};
use shoal_wire::pb;

use super::patch::{get, merge_diff, patch};
use super::{kind_and_name, Context};
use crate::output::{parse_object, print_rows};
use crate::Outcome;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Follow a rollout until it completes (exit 0) or pauses (exit 1).
    Status { service: String },
    /// The service's spec revisions.
    History { service: String },
    /// Go back to the previous revision (a new rollout).
    Undo { service: String },
}

fn service_name(reference: &str) -> anyhow::Result<String> {
    let (kind, name) = match reference.split_once('/') {
        Some(_) => kind_and_name(reference)?,
        None => (super::kind("service")?, reference.to_string()),
    };
    if kind.kind != "Service" {
        anyhow::bail!("{reference:?}: rollouts are for services");
    }
    Ok(name)
}

fn typed(obj: &DynamicObject) -> anyhow::Result<Service> {
    obj.to_typed()
        .map_err(|e| anyhow::anyhow!("unreadable service: {e}"))
}

pub async fn run(ctx: &Context, c: Command) -> Outcome {
    match c {
        Command::Status { service } => status(ctx, &service_name(&service)?).await,
        Command::History { service } => history(ctx, &service_name(&service)?).await,
        Command::Undo { service } => undo(ctx, &service_name(&service)?).await,
    }
}

/// One line about where the rollout is, and whether it has ended (Some(exit code)).
fn progress(svc: &Service) -> (String, Option<u8>) {
    let name = &svc.metadata.name;
    let st = svc.status.clone().unwrap_or_default();
    let generation = svc.metadata.generation.unwrap_or(1);
    if st.observed_generation != Some(generation) {
        return (
            format!("waiting for the controller to see generation {generation}"),
            None,
        );
    }
    let counts = format!(
        "{} of {} tasks updated, {} running",
        st.updated_replicas, st.replicas, st.running_replicas
    );
    match st.update.as_ref().map(|u| (u.state, u.message.clone())) {
        Some((UpdateState::Updating, _)) => {
            (format!("service/{name}: rolling out: {counts}"), None)
        }
        Some((UpdateState::RollbackStarted, m)) => (
            format!("service/{name}: rolling back ({m}): {counts}"),
            None,
        ),
        Some((UpdateState::Paused | UpdateState::RollbackPaused, m)) => {
            (format!("service/{name}: rollout paused: {m}"), Some(1))
        }
        Some((UpdateState::RollbackCompleted, m)) => {
            (format!("service/{name}: rolled back: {m}"), Some(1))
        }
        _ if st.running_replicas < st.replicas => (format!("service/{name}: {counts}"), None),
        _ => (
            format!("service/{name} successfully rolled out ({counts})"),
            Some(0),
        ),
    }
}

async fn status(ctx: &Context, name: &str) -> Outcome {
    let mut stream = ctx
        .client()
        .await?
        .watch(pb::WatchRequest {
            kind: "Service".into(),
            label_selector: String::new(),
            resource_version: 0,
            send_initial: true,
            name: name.into(),
            involved_object: String::new(),
        })
        .await?
        .into_inner();
    let mut last = String::new();
    let mut seen = false;
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        match msg.r#type.as_str() {
            "SYNCED" if !seen => anyhow::bail!("service/{name} not found"),
            "SYNCED" => continue,
            "DELETED" => anyhow::bail!("service/{name} was deleted"),
            _ => {}
        }
        seen = true;
        let svc = typed(&parse_object(&msg.json)?)?;
        let (line, done) = progress(&svc);
        if line != last {
            println!("{line}");
            last = line;
        }
        if let Some(code) = done {
            return Ok(ExitCode::from(code));
        }
    }
    anyhow::bail!("the server closed the watch")
}

async fn history(ctx: &Context, name: &str) -> Outcome {
    let svc = typed(&get(ctx, "Service", name).await?)?;
    let st = svc.status.unwrap_or_default();
    let mut rows = vec![["REVISION", "CAUSE", "IMAGE", "TEMPLATE", "TIME"]
        .map(String::from)
        .to_vec()];
    for r in &st.history {
        rows.push(vec![
            r.generation.to_string(),
            r.cause.clone(),
            r.spec.container.image.clone(),
            r.template.clone(),
            r.time.to_rfc3339(),
        ]);
    }
    if st.history.is_empty() {
        println!("service/{name}: no revisions recorded yet");
    } else {
        print_rows(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn undo(ctx: &Context, name: &str) -> Outcome {
    let live = get(ctx, "Service", name).await?;
    let svc = typed(&live)?;
    let st = svc.status.unwrap_or_default();
    let current = svc.metadata.generation.unwrap_or(1);
    let previous = st
        .history
        .iter()
        .rev()
        .find(|r| {
            r.generation < current
                && r.template != shoal_controller_service::template_hash(&svc.spec)
        })
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("service/{name} has no earlier revision to go back to"))?;
    // The container template goes back; the scale stays as it is now.
    let mut restored = (*previous.spec).clone();
    restored.replicas = svc.spec.replicas;
    let now = live.body.get("spec").unwrap_or(&serde_json::Value::Null);
    let change = serde_json::json!({"spec": merge_diff(now, &serde_json::to_value(&restored)?)});
    patch(ctx, "Service", name, change).await?;
    println!(
        "service/{name} rolled back to revision {} ({})",
        previous.generation, previous.spec.container.image
    );
    Ok(ExitCode::SUCCESS)
}
