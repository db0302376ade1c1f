use std::process::ExitCode;

use shoal_wire::pb;

use super::{kind, Context};
use crate::{manifests, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Kind and name, as in `delete service web` (or `service/web`).
    #[arg(num_args = 0..=2)]
    target: Vec<String>,
    /// Delete the objects these manifests describe.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let targets: Vec<(String, String)> = match (a.target.as_slice(), a.files.is_empty()) {
        ([], false) => manifests::read_all(&a.files)?
            .into_iter()
            .map(|m| (m.object.kind, m.object.metadata.name))
            .collect(),
        ([reference], true) => {
            let (desc, name) = super::kind_and_name(reference)?;
            vec![(desc.kind.to_string(), name)]
        }
        ([k, name], true) => vec![(kind(k)?.kind.to_string(), name.clone())],
        ([], true) => anyhow::bail!("say what to delete: KIND NAME, KIND/NAME or -f FILE"),
        _ => anyhow::bail!("give either KIND NAME or -f FILE, not both"),
    };
    delete_each(ctx, targets).await
}

/// Deletes each `(kind, name)`, saying what became of it; a failure does not stop the
/// rest, and makes the exit code 1.
pub async fn delete_each(ctx: &Context, targets: Vec<(String, String)>) -> Outcome {
    let mut client = ctx.client().await?;
    let mut failed = false;
    for (kind, name) in targets {
        match client
            .delete(pb::DeleteRequest {
                kind: kind.clone(),
                name: name.clone(),
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                let what = if r.outcome == "pending" {
                    "marked for deletion (finalizers remain)"
                } else {
                    "deleted"
                };
                println!("{}/{name} {what}", kind.to_ascii_lowercase());
            }
            Err(status) => {
                eprintln!("error: {}", status.message());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
