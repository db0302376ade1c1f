use std::io::Write;
use std::process::ExitCode;

use shoal_wire::pb;

use super::{kind, Context};
use crate::output::{self, format_row, parse_object, Table};
use crate::{Format, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Kind: singular, plural or short (svc).
    kind: String,
    /// One object; all of them when omitted.
    name: Option<String>,
    /// Label selector: app=web,tier!=db,env in (a,b)
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
    /// After listing, keep printing changes.
    #[arg(short = 'w', long)]
    watch: bool,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let desc = kind(&a.kind)?;
    let mut client = ctx.client().await?;
    if a.watch {
        return watch(ctx, desc, a).await;
    }
    match &a.name {
        Some(name) => {
            let obj = client
                .get(pb::GetRequest {
                    kind: desc.kind.into(),
                    name: name.clone(),
                })
                .await?
                .into_inner();
            output::print_one(&parse_object(&obj.json)?, ctx.format)?;
        }
        None => {
            let selector = a.selector.unwrap_or_default();
            let items = super::list_objects(ctx, desc.kind, &selector).await?;
            output::print_list(desc.kind, &items, ctx.format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch(ctx: &Context, desc: &shoal_api::KindDesc, a: Args) -> Outcome {
    let request = pb::WatchRequest {
        kind: desc.kind.into(),
        label_selector: a.selector.unwrap_or_default(),
        resource_version: 0,
        send_initial: true,
        name: a.name.unwrap_or_default(),
        involved_object: String::new(),
    };
    let mut stream = super::follow::Resuming::open(ctx, request).await?;
    let table = Table::for_kind(desc.kind, ctx.format == Some(Format::Wide));
    let mut printer = Printer::new(ctx.format, table);
    loop {
        let msg = stream.next().await?;
        if msg.r#type == "SYNCED" {
            continue;
        }
        let obj = parse_object(&msg.json)?;
        printer.print(&msg.r#type, &obj)?;
    }
}

/// Prints watch events; tables keep the column widths of the first rows they saw.
pub struct Printer {
    format: Option<Format>,
    table: Table,
    widths: Option<Vec<usize>>,
}

impl Printer {
    pub fn new(format: Option<Format>, table: Table) -> Self {
        Printer {
            format,
            table,
            widths: None,
        }
    }

    pub fn print(&mut self, change: &str, obj: &shoal_api::DynamicObject) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.format {
            Some(Format::Json) => writeln!(
                out,
                "{}",
                serde_json::to_string(&serde_json::json!({"type": change, "object": obj}))?
            )?,
            Some(Format::Yaml) => write!(
                out,
                "---\n{}",
                output::to_yaml(&serde_json::json!({"type": change, "object": obj}))?
            )?,
            Some(Format::Name) => writeln!(
                out,
                "{} {}",
                output::name_of(obj),
                change.to_ascii_lowercase()
            )?,
            _ => {
                let mut header = self.table.header();
                header.push("EVENT".into());
                let mut row = self.table.row(obj);
                row.push(change.to_ascii_lowercase());
                if self.widths.is_none() {
                    let w: Vec<usize> = header
                        .iter()
                        .zip(&row)
                        .map(|(h, c)| h.len().max(c.chars().count()).max(8))
                        .collect();
                    writeln!(out, "{}", format_row(&header, &w))?;
                    self.widths = Some(w);
                }
                writeln!(
                    out,
                    "{}",
                    format_row(&row, self.widths.as_deref().unwrap_or_default())
                )?;
            }
        }
        out.flush()?;
        Ok(())
    }
}
