//! `shoal logs KIND/NAME`: a service's or task's container output, from the agents.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use shoal_wire::pb;

use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// service/NAME or task/NAME
    target: String,
    /// Keep printing new output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines of each task.
    #[arg(long)]
    tail: Option<u64>,
    /// Only output from this long ago on (10s, 5m, 1h).
    #[arg(long, value_parser = super::server::parse_duration)]
    since: Option<Duration>,
    /// Prefix each line with its time.
    #[arg(short = 't', long)]
    timestamps: bool,
}

impl Args {
    /// Follow one task's whole output (what `shoal run` shows).
    pub fn for_task(name: &str) -> Args {
        Args {
            target: format!("task/{name}"),
            follow: true,
            tail: None,
            since: None,
            timestamps: false,
        }
    }
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let (kind, name) = super::kind_and_name(&a.target)?;
    let since = a
        .since
        .map(|d| {
            let at = chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or_default();
            at.timestamp_nanos_opt().unwrap_or(0)
        })
        .unwrap_or(0);
    let mut client = ctx.client().await?;
    let mut stream = client
        .logs(pb::LogsRequest {
            kind: kind.kind.to_string(),
            name: name.clone(),
            follow: a.follow,
            tail: a.tail.map_or(-1, |t| t as i64),
            since_unix_nanos: since,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    // A service's lines say which task they come from, as `docker service logs` does.
    let prefix = kind.kind == "Service";
    let mut out = std::io::stdout().lock();
    while let Some(e) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        let mut line = String::new();
        if a.timestamps {
            line.push_str(&e.time);
            line.push(' ');
        }
        if prefix {
            line.push_str(&format!("{}@{} | ", e.task, e.node));
        }
        line.push_str(&e.line);
        if !line.ends_with('\n') {
            line.push('\n');
        }
        if out.write_all(line.as_bytes()).is_err() || out.flush().is_err() {
            break; // The reader went away (`| head`).
        }
    }
    Ok(ExitCode::SUCCESS)
}
