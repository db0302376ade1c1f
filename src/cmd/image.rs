//! `shoal image pull|import|ls|rm`: the node's local image store, which the agent on
//! this machine uses (`--data-dir`, as given to `shoal agent`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use shoal_agent::image::{self, ImageStore, Progress, PullOptions};

use super::Context;
use crate::{Format, Outcome};

/// The agent's default data directory; images live in `<data-dir>/images`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/shoal";

#[derive(clap::Args)]
pub struct Args {
    /// The node's data directory (as given to `shoal agent`).
    #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Pull an image from a registry (http for loopback registries).
    Pull {
        reference: String,
        /// A registry (host:port) to reach over plain http; repeatable.
        #[arg(long = "insecure-registry")]
        insecure_registry: Vec<String>,
        /// No progress output.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Load a `docker save` archive or an OCI image layout (tar).
    Import {
        file: PathBuf,
        /// The name to give the image (when the archive does not name it).
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Remove images and the layers nothing else uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

pub fn store(data_dir: &Path) -> anyhow::Result<ImageStore> {
    Ok(ImageStore::open(&data_dir.join("images"))?)
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let store = store(&a.data_dir)?;
    match a.command {
        Command::Pull {
            reference,
            insecure_registry,
            quiet,
        } => {
            let opts = PullOptions {
                insecure_registries: insecure_registry,
            };
            let mut report = |p: Progress| {
                if quiet {
                    return;
                }
                let line = match p {
                    Progress::Resolved { manifest, layers } => {
                        format!(
                            "{reference}: manifest {} ({layers} layers)",
                            short(&manifest)
                        )
                    }
                    Progress::Downloading { layer, done, total } => {
                        format!(
                            "{}: downloading {} / {}",
                            short(&layer),
                            mib(done),
                            mib(total)
                        )
                    }
                    Progress::Cached { layer } => format!("{}: already present", short(&layer)),
                    Progress::Unpacked { layer } => format!("{}: unpacked", short(&layer)),
                };
                let _ = writeln!(std::io::stderr(), "{line}");
            };
            let record = image::pull(&store, &reference, &opts, &mut report).await?;
            println!("{} pulled ({})", record.name, short(&record.manifest));
        }
        Command::Import { file, name } => {
            let records = image::import_archive(&store, &file, name.as_deref()).await?;
            for r in records {
                println!("{} imported ({})", r.name, short(&r.manifest));
            }
        }
        Command::Ls => {
            let images = store.list()?;
            match ctx.format {
                Some(Format::Json) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({ "items": images }))?
                    )
                }
                Some(Format::Name) => images.iter().for_each(|i| println!("{}", i.name)),
                _ => {
                    println!("{:<60} {:<14} {:>10}  CREATED", "NAME", "MANIFEST", "SIZE");
                    for i in images {
                        println!(
                            "{:<60} {:<14} {:>10}  {}",
                            i.name,
                            short(&i.manifest),
                            mib(i.size()),
                            i.created.format("%Y-%m-%d %H:%M:%S")
                        );
                    }
                }
            }
        }
        Command::Rm { references } => {
            let mut failed = false;
            for r in references {
                let name = image::normalize(&r)?;
                match store.remove(&name) {
                    Ok(_) => println!("{name} removed"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
