//! One module per command.

pub mod agent;
pub mod apply;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod events;
pub mod exec;
mod follow;
pub mod get;
pub mod gitsync;
pub mod image;
pub mod logs;
pub mod node;
pub mod patch;
pub mod ps;
pub mod rename;
pub mod rm;
pub mod rollout;
pub mod run;
pub mod run_flags;
pub mod scale;
pub mod server;
pub mod sim;
pub mod start;
pub mod stop;
pub mod tasks;
pub mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use shoal_wire::api_client;
use shoal_wire::pb::api_client::ApiClient;
use shoal_wire::pb::InfoRequest;
use tonic::transport::Channel;

use crate::{Format, Outcome};

/// What every client command needs.
pub struct Context {
    pub server: String,
    pub ca_cert: Option<PathBuf>,
    pub format: Option<Format>,
}

impl Context {
    pub async fn client(&self) -> anyhow::Result<ApiClient<Channel>> {
        Ok(api_client(&self.server, self.ca_cert.as_deref()).await?)
    }
}

/// Resolves a kind the way users type it, with the list of kinds when it is unknown.
pub fn kind(name: &str) -> anyhow::Result<&'static shoal_api::KindDesc> {
    shoal_api::kind_by_name(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown kind {name:?}; known kinds: {} (singular, plural or short names work)",
            shoal_api::object::kind_names()
        )
    })
}

/// Splits `kind/name` (as in `service/web`).
pub fn kind_and_name(reference: &str) -> anyhow::Result<(&'static shoal_api::KindDesc, String)> {
    let (k, n) = reference
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{reference:?}: expected KIND/NAME, like service/web"))?;
    if n.is_empty() {
        anyhow::bail!("{reference:?}: the name is missing");
    }
    Ok((kind(k)?, n.to_string()))
}

pub async fn version(ctx: &Context) -> Outcome {
    println!("client: shoal {}", env!("CARGO_PKG_VERSION"));
    let info = ctx.client().await?.info(InfoRequest {}).await?.into_inner();
    println!("server: shoal {} ({})", info.version, info.server_id);
    println!("store: {}", info.store);
    println!(
        "controller leader: {}",
        if info.leader.is_empty() {
            "<none>"
        } else {
            &info.leader
        }
    );
    Ok(ExitCode::SUCCESS)
}
