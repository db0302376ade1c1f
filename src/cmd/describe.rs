use std::process::ExitCode;

use serde_json::Value;
use shoal_wire::pb;

use super::{kind, Context};
use crate::output::{age, parse_object, print_rows, to_yaml};
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    kind: String,
    name: Option<String>,
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let (desc, name) = match a.name {
        Some(n) => (kind(&a.kind)?, n),
        None => super::kind_and_name(&a.kind)?,
    };
    let mut client = ctx.client().await?;
    let obj = parse_object(
        &client
            .get(pb::GetRequest {
                kind: desc.kind.into(),
                name: name.clone(),
            })
            .await?
            .into_inner()
            .json,
    )?;
    let m = &obj.metadata;
    let kv = |map: &std::collections::BTreeMap<String, String>| {
        if map.is_empty() {
            "<none>".to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n              ")
        }
    };
    println!("Name:         {}", m.name);
    println!("Kind:         {}", obj.kind);
    println!("Labels:       {}", kv(&m.labels));
    println!("Annotations:  {}", kv(&m.annotations));
    if let Some(ts) = m.creation_timestamp {
        println!(
            "Created:      {} ({} ago)",
            ts.to_rfc3339(),
            age(Some(&ts.to_rfc3339()))
        );
    }
    println!(
        "Generation:   {}    Resource version: {}",
        m.generation.unwrap_or(0),
        m.resource_version.as_deref().unwrap_or("")
    );
    if let Some(ts) = m.deletion_timestamp {
        println!(
            "Deleting:     since {} (finalizers: {})",
            ts.to_rfc3339(),
            m.finalizers.join(", ")
        );
    }
    if !m.owner_references.is_empty() {
        let owners: Vec<String> = m
            .owner_references
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect();
        println!("Owned by:     {}", owners.join(", "));
    }
    let mut body = obj.body.clone();
    let status = body.remove("status");
    if let Some(spec) = body.remove("spec") {
        println!("Spec:");
        print!("{}", indent(&to_yaml(&spec)?, 2));
    }
    if !body.is_empty() {
        print!("{}", to_yaml(&body)?);
    }
    if let Some(mut status) = status {
        let conditions = status.as_object_mut().and_then(|s| s.remove("conditions"));
        println!("Status:");
        if status.as_object().is_some_and(|s| !s.is_empty()) {
            print!("{}", indent(&to_yaml(&status)?, 2));
        }
        if let Some(Value::Array(conds)) = conditions {
            println!("Conditions:");
            let mut rows = vec![
                vec!["  TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            ];
            for c in conds {
                let f = |k: &str| {
                    c.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                rows.push(vec![
                    format!("  {}", f("type")),
                    f("status"),
                    f("reason"),
                    age(Some(&f("lastTransitionTime"))),
                    f("message"),
                ]);
            }
            print_rows(&rows);
        }
    }
    if desc.kind != "Event" {
        let events = client
            .list(pb::ListRequest {
                kind: "Event".into(),
                label_selector: String::new(),
                involved_object: format!("{}/{}", desc.kind, name),
            })
            .await?
            .into_inner();
        let mut events: Vec<_> = events
            .items
            .iter()
            .map(|j| parse_object(j))
            .collect::<anyhow::Result<_>>()?;
        let ts = |o: &shoal_api::DynamicObject| {
            o.body
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        events.sort_by_key(ts);
        if events.is_empty() {
            println!("Events:       <none>");
        } else {
            println!("Events:");
            let mut rows = vec![vec!["  TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
                .into_iter()
                .map(String::from)
                .collect()];
            for e in events.iter().rev().take(20).rev() {
                let f = |k: &str| {
                    e.body
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let count = e.body.get("count").and_then(Value::as_u64).unwrap_or(1);
                let msg = if count > 1 {
                    format!("{} (x{count})", f("message"))
                } else {
                    f("message")
                };
                rows.push(vec![
                    format!("  {}", f("type")),
                    f("reason"),
                    age(Some(&f("lastTimestamp"))),
                    f("source"),
                    msg,
                ]);
            }
            print_rows(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
