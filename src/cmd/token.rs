//! `shoal token create|rotate`: the join tokens nodes join the cluster with.

use std::process::ExitCode;

use shoal_wire::pb;

use super::Context;
use crate::Outcome;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the join token of a role (made on first use).
    Create {
        /// worker: joins an agent; manager: joins a server.
        #[arg(long, default_value = "worker", value_parser = ["worker", "manager"])]
        role: String,
    },
    /// Make new join tokens: the old ones stop working for new joins; nodes that
    /// joined keep their certificates.
    Rotate {
        /// Only this role's (default: both).
        #[arg(long, value_parser = ["worker", "manager"])]
        role: Option<String>,
    },
}

pub async fn run(ctx: &Context, c: Command) -> Outcome {
    let (roles, rotate) = match c {
        Command::Create { role } => (vec![role], false),
        Command::Rotate { role } => (
            role.map(|r| vec![r])
                .unwrap_or_else(|| vec!["worker".into(), "manager".into()]),
            true,
        ),
    };
    let mut client = ctx.client().await?;
    for role in roles {
        let token = client
            .join_token(pb::JoinTokenRequest {
                role: role.clone(),
                rotate,
            })
            .await?
            .into_inner()
            .token;
        if rotate {
            println!("{role}: {token}");
        } else {
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
