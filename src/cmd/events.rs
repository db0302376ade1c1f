use std::process::ExitCode;

use shoal_api::DynamicObject;
use shoal_wire::pb;

use super::Context;
use crate::cmd::get::Printer;
use crate::output::{self, parse_object, Table};
use crate::{Format, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Keep printing events as they happen.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Only events about this object: KIND/NAME.
    #[arg(long = "for")]
    for_object: Option<String>,
    /// Only these types, comma-separated: Normal, Warning.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
}

fn last_seen(o: &DynamicObject) -> String {
    o.body
        .get("lastTimestamp")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let involved = match &a.for_object {
        Some(r) => {
            let (desc, name) = super::kind_and_name(r)?;
            format!("{}/{name}", desc.kind)
        }
        None => String::new(),
    };
    for t in &a.types {
        if !matches!(t.as_str(), "Normal" | "Warning") {
            anyhow::bail!("--types {t:?}: expected Normal or Warning");
        }
    }
    let wanted = |o: &DynamicObject| {
        a.types.is_empty()
            || o.body
                .get("type")
                .and_then(|v| v.as_str())
                .is_some_and(|t| a.types.iter().any(|w| w == t))
    };
    let mut client = ctx.client().await?;
    if !a.watch {
        let list = client
            .list(pb::ListRequest {
                kind: "Event".into(),
                label_selector: String::new(),
                involved_object: involved,
            })
            .await?
            .into_inner();
        let mut items: Vec<DynamicObject> = list
            .items
            .iter()
            .map(|j| parse_object(j))
            .collect::<anyhow::Result<Vec<_>>>()?;
        items.retain(|o| wanted(o));
        items.sort_by_key(last_seen);
        output::print_list("Event", &items, ctx.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let request = pb::WatchRequest {
        kind: "Event".into(),
        label_selector: String::new(),
        resource_version: 0,
        send_initial: true,
        name: String::new(),
        involved_object: involved,
    };
    let mut stream = super::follow::Resuming::open(ctx, request).await?;
    let mut printer = Printer::new(
        ctx.format,
        Table::for_kind("Event", ctx.format == Some(Format::Wide)),
    );
    let mut initial = Vec::new();
    let mut synced = false;
    loop {
        let msg = stream.next().await?;
        if msg.r#type == "SYNCED" {
            // Print what already happened in time order, then follow.
            initial.sort_by_key(last_seen);
            for o in initial.drain(..) {
                printer.print("ADDED", &o)?;
            }
            synced = true;
            continue;
        }
        if msg.r#type == "DELETED" {
            continue; // Events expiring is not news.
        }
        let obj = parse_object(&msg.json)?;
        if !wanted(&obj) {
            continue;
        }
        if synced {
            printer.print(&msg.r#type, &obj)?;
        } else {
            initial.push(obj);
        }
    }
}
