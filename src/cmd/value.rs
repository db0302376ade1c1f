//! `shoal secret|config create|ls|rm`, and `shoal secret rotate-key`: Swarm's
//! `docker secret` and `docker config`. A value is read from a file or stdin, sent
//! once, and never printed again: listings show its digest and size.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context as _;
use shoal_api::MAX_VALUE_BYTES;
use shoal_wire::pb;

use super::Context;
use crate::{output, Outcome};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create one from a file, or from stdin with `-f -`. Values never change: a new
    /// value is a new name, and a rolling update of the services that use it.
    Create {
        name: String,
        /// The file holding the value, or - for stdin.
        #[arg(short = 'f', long = "file")]
        file: String,
        /// Labels, `key=value`, repeated.
        #[arg(short = 'l', long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List them: name, digest, size and age (never the value).
    #[command(alias = "list")]
    Ls,
    /// Remove them; refused while a service or task uses one, naming which.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Seal every secret's and config's data key under a new value key and drop the
    /// old key (the values themselves are not rewritten).
    RotateKey,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?}: a label is key=value"))
}

/// The value in `file` (`-`: stdin), refused past the limit before it is all read.
fn read_value(file: &str) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    let limit = MAX_VALUE_BYTES as u64 + 1;
    if file == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut data)
            .context("reading the value from stdin")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .with_context(|| format!("-f {file}"))?;
    }
    let source = if file == "-" { "stdin" } else { file };
    if data.len() > MAX_VALUE_BYTES {
        anyhow::bail!(
            "-f {source}: more than {MAX_VALUE_BYTES} bytes (500 KiB), the most a value holds"
        );
    }
    if data.is_empty() {
        anyhow::bail!("-f {source}: empty; a value holds at least one byte");
    }
    Ok(data)
}

pub async fn run(ctx: &Context, kind: &'static str, c: Command) -> Outcome {
    match c {
        Command::Create { name, file, labels } => {
            let data = read_value(&file)?;
            let created = ctx
                .client()
                .await?
                .create_value(pb::CreateValueRequest {
                    kind: kind.into(),
                    name,
                    labels: labels.into_iter().collect(),
                    data,
                })
                .await?
                .into_inner();
            let obj = output::parse_object(&created.json)?;
            println!("{} created", output::name_of(&obj));
        }
        Command::Ls => {
            let items = super::list_objects(ctx, kind, "").await?;
            output::print_list(kind, &items, ctx.format)?;
        }
        Command::Rm { names } => {
            let targets = names.into_iter().map(|n| (kind.to_string(), n)).collect();
            return super::delete::delete_each(ctx, targets).await;
        }
        Command::RotateKey => {
            let r = ctx
                .client()
                .await?
                .rotate_value_key(pb::RotateValueKeyRequest {})
                .await?
                .into_inner();
            let dropped = match r.dropped.as_slice() {
                [] => "none".to_string(),
                ids => ids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            println!(
                "value key {} in use; {} data keys sealed again; keys dropped: {dropped}",
                r.key, r.resealed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
