//! `shoal sim`: N simulated nodes in one process, through the real agent API.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::sim::{SimConfig, SimExecutor};
use shoal_agent::{run_node, NodeConfig};
use shoal_reconcile::CancellationToken;

use shoal_wire::{pb, Credentials, LiveIdentity};

use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// How many nodes.
    #[arg(long)]
    nodes: usize,
    /// Node names are PREFIX-0 .. PREFIX-(N-1).
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// From assigned to running.
    #[arg(long, default_value = "100ms", value_parser = super::server::parse_duration)]
    start_delay: Duration,
    /// Tasks whose image matches this glob fail once started.
    #[arg(long)]
    fail_images: Option<String>,
    /// How long job and cron tasks run before completing.
    #[arg(long, default_value = "1s", value_parser = super::server::parse_duration)]
    job_duration: Duration,
    /// Labels for every node: k=v,k=v
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Labels for one node: NAME:k=v (repeatable), e.g. sim-0:zone=eu
    #[arg(long = "node-label")]
    node_labels: Vec<String>,
    /// CPUs per node.
    #[arg(long, default_value_t = 4.0)]
    cpu: f64,
    /// Memory per node.
    #[arg(long, default_value = "8g")]
    memory: shoal_api::ByteSize,
}

pub fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--labels {kv:?}: expected key=value"))?;
            shoal_api::meta::check_label_key(k)
                .map_err(|why| anyhow::anyhow!("--labels {kv:?}: {why}"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    super::server::init_logging();
    if a.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    shoal_api::meta::check_name(&format!("{}-0", a.prefix), false)
        .map_err(|why| anyhow::anyhow!("--prefix {:?}: {why}", a.prefix))?;
    let labels = parse_labels(&a.labels)?;
    let mut per_node: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in &a.node_labels {
        let (node, kv) = item
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--node-label {item:?}: expected NODE:key=value"))?;
        per_node
            .entry(node.to_string())
            .or_default()
            .extend(parse_labels(&[kv.to_string()])?);
    }
    let config = SimConfig {
        start_delay: a.start_delay,
        fail_images: a.fail_images.clone(),
        job_duration: a.job_duration,
    };
    let shutdown = CancellationToken::new();
    let server = ctx.server.clone();
    let names: Vec<String> = (0..a.nodes).map(|i| format!("{}-{i}", a.prefix)).collect();
    let channels = channels(ctx, &server, &names).await?;
    for i in 0..a.nodes {
        let name = names[i].clone();
        let mut node_labels = labels.clone();
        node_labels.insert(shoal_api::labels::SIMULATED.into(), "true".into());
        if let Some(extra) = per_node.get(&name) {
            node_labels.extend(extra.clone());
        }
        let node = NodeConfig {
            name,
            labels: node_labels,
            cpu: a.cpu,
            memory_bytes: a.memory.0,
            address: "127.0.0.1".into(),
            role: "worker".into(),
            pipelines: None,
        };
        let executor = Arc::new(SimExecutor::new(config.clone()));
        tokio::spawn(run_node(
            channels[i].clone(),
            node,
            executor,
            shutdown.clone(),
        ));
    }
    eprintln!(
        "shoal sim: {} nodes {}-0..{}-{} on {}",
        a.nodes,
        a.prefix,
        a.prefix,
        a.nodes - 1,
        ctx.server
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
    Ok(ExitCode::SUCCESS)
}

/// A channel per node, each its own connection as a real node's is (so a server sees
/// the connections a cluster of that size gives it, and the cost of TLS on them is
/// measured as it would be). Over mutual TLS each node joins with a worker token
/// (which the admin config lets this command ask for), with a key and a certificate of
/// its own.
async fn channels(
    ctx: &Context,
    server: &str,
    names: &[String],
) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    if !server.trim_start().starts_with("https://") {
        return Ok(names
            .iter()
            .map(|_| shoal_wire::lazy_channel(server, &Credentials::default()))
            .collect::<Result<_, _>>()?);
    }
    let token = ctx
        .client()
        .await?
        .join_token(pb::JoinTokenRequest {
            role: "worker".into(),
            rotate: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("a join token for the simulated nodes: {}", s.message()))?
        .into_inner()
        .token;
    let ca = ctx.credentials()?.ca_pem.clone();
    let trust = Credentials {
        ca_pem: ca.clone(),
        identity: None,
    };
    let joining = shoal_wire::agent_client(shoal_wire::lazy_channel(server, &trust)?);
    let mut joins = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (mut client, token, name) = (joining.clone(), token.clone(), name.clone());
        joins.spawn(async move {
            let (key_pem, csr_pem) = shoal_pki::new_key_and_csr(&name)?;
            let joined = client
                .join(pb::JoinRequest {
                    token,
                    name: name.clone(),
                    csr_pem,
                    sans: Vec::new(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("node {name} joining: {}", s.message()))?
                .into_inner();
            let identity = LiveIdentity::from_pem(joined.cert_pem.as_bytes(), key_pem.as_bytes())?;
            anyhow::Ok((i, identity))
        });
    }
    let mut channels = vec![None; names.len()];
    while let Some(joined) = joins.join_next().await {
        let (i, identity) = joined??;
        let creds = Credentials {
            ca_pem: ca.clone(),
            identity: Some(identity),
        };
        channels[i] = Some(shoal_wire::lazy_channel(server, &creds)?);
    }
    Ok(channels.into_iter().flatten().collect())
}
