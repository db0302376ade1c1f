//! `shoal exec TASK -- CMD..`: runs a command in a task's container; exits with its
//! exit code.

use std::io::Write;
use std::process::ExitCode;

use shoal_apiserver::pb;

use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// The task (`web.1`, or `task/web.1`).
    task: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let task = a.task.strip_prefix("task/").unwrap_or(&a.task).to_string();
    let mut client = ctx.client().await?;
    let mut stream = client
        .exec(pb::ExecRequest {
            task,
            command: a.command,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let mut code = 0;
    while let Some(o) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        match o.stream.as_str() {
            "stdout" => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&o.data);
                let _ = out.flush();
            }
            "stderr" => {
                let _ = std::io::stderr().write_all(&o.data);
            }
            _ => code = o.exit_code,
        }
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
