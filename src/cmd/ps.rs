//! `shoal ps`: tasks as `docker ps` lists containers.

use std::process::ExitCode;

use shoal_api::DynamicObject;
use shoal_wire::pb;

use super::tasks::{ended, state};
use super::Context;
use crate::output::{age, parse_object};
use crate::{Format, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Ended tasks too (and service tasks' history).
    #[arg(short, long)]
    all: bool,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
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
        let mut command =
            crate::output::shell_words(t["spec"]["command"].as_array().into_iter().flatten());
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
            t["status"]["addresses"][0]
                .as_str()
                .map_or("-", |a| a.strip_prefix("bridge=").unwrap_or(a)),
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
