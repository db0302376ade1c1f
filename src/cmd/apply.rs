use std::process::ExitCode;

use super::Context;
use crate::{manifests, output, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// A manifest file, a directory of them, or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Check and report what would happen, without writing anything.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    apply(ctx, &a.files, a.dry_run).await
}

/// Applies `files` (what `shoal up -f` does too).
pub async fn apply_files(ctx: &Context, files: &[String]) -> Outcome {
    apply(ctx, files, false).await
}

async fn apply(ctx: &Context, files: &[String], dry_run: bool) -> Outcome {
    let manifests = manifests::read_all(files)?;
    let request = manifests::apply_request(&manifests, dry_run)?;
    let response = ctx.client().await?.apply(request).await?.into_inner();
    let suffix = if dry_run { " (dry run)" } else { "" };
    for r in response.results {
        match ctx.format {
            Some(crate::Format::Json) | Some(crate::Format::Yaml) => {
                output::print_one(&output::parse_object(&r.json)?, ctx.format)?
            }
            _ => println!(
                "{}/{} {}{suffix}",
                r.kind.to_ascii_lowercase(),
                r.name,
                r.outcome
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
