//! `shoal agent`: the node agent, running its tasks as containers through an OCI
//! runtime, each under a `shoal-monitor` process of its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::container::netlink::Netlink;
use shoal_agent::container::overlay::Overlay;
use shoal_agent::container::overlay_netlink::OverlayNetlink;
use shoal_agent::container::vip::Nft;
use shoal_agent::container::{egress, network, RuncConfig, RuncExecutor};
use shoal_agent::dns::{self, Dns};
use shoal_agent::image::PullOptions;
use shoal_agent::node_api::NodeApi;
use shoal_agent::{run_node, NodeConfig};
use shoal_reconcile::CancellationToken;

use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// This node's name.
    #[arg(long)]
    name: String,
    /// Node labels: k=v,k=v
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Images, containers and logs live here.
    #[arg(long, default_value = super::image::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The OCI runtime binary (runc, crun, youki, ...).
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// A registry (host:port) to pull from over plain http; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// How long a stopping container gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = super::server::parse_duration)]
    stop_grace_period: Duration,
    /// Where this agent serves its node API (container logs) to the API server.
    #[arg(long, default_value = "127.0.0.1:7444")]
    listen: std::net::SocketAddr,
    /// Serve the node API beyond loopback without TLS (only on a trusted network).
    #[arg(long)]
    insecure: bool,
    /// The bridge containers are connected to (created if missing).
    #[arg(long, default_value = network::BRIDGE)]
    bridge: String,
    /// The bridge's subnet: it takes the first address, containers the rest.
    #[arg(long, default_value = "172.30.0.0/16")]
    subnet: network::Subnet,
    /// This node's address for overlay traffic (VXLAN) and the one it registers
    /// (Swarm's --advertise-addr); default: the --listen address's IP.
    #[arg(long)]
    advertise_addr: Option<std::net::Ipv4Addr>,
    /// The resolvers the containers' DNS forwards other names to, IP[:port],
    /// comma-separated (default: the nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',', value_parser = parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// Network namespaces (on the bridge, with an address) kept ready for starting
    /// tasks, so they do not wait on the kernel for their own; 0: none.
    #[arg(long, default_value_t = 32)]
    netns_pool: usize,
    /// Do not masquerade containers' traffic out of the node (no way out but their
    /// networks).
    #[arg(long)]
    no_egress: bool,
    /// Join the cluster at this server URL (or several, comma-separated: the node
    /// follows whichever answers) with --token, instead of --server: the node gets its
    /// certificate from the cluster CA, once, kept in <data-dir>/pki.
    #[arg(long, requires = "token")]
    join: Option<String>,
    /// The join token, from `shoal token create` (SHOAL-1-...).
    #[arg(
        long,
        env = "SHOAL_JOIN_TOKEN",
        hide_env_values = true,
        requires = "join"
    )]
    token: Option<String>,
    /// The per-container monitor program (default: `shoal-monitor` beside this binary).
    #[arg(long)]
    monitor: Option<PathBuf>,
}

/// A resolver's address: IP or IP:port (port 53 when not given).
fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| format!("{s:?} is not an IP address or IP:port"))
}

/// The monitor program: as given, or `shoal-monitor` installed beside `shoal`.
fn find_monitor(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name(shoal_monitor::MONITOR_BIN),
    };
    if !path.is_file() {
        anyhow::bail!(
            "--monitor {}: not found (install shoal-monitor beside shoal, or name it)",
            path.display()
        );
    }
    Ok(path)
}

/// Finds `runtime` on PATH (or as given), so a missing runtime is one clear error.
fn find_runtime(runtime: &str) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = if runtime.contains('/') {
        vec![PathBuf::from(runtime)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(runtime)).collect())
            .unwrap_or_default()
    };
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "--runtime {runtime:?}: not found (install runc, or name another OCI runtime)"
        )
    })
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    super::server::init_logging();
    // glibc gives every thread that allocates an arena of its own (up to 8 per core);
    // the agent's short-lived namespace threads would each leave one behind. Two keep
    // its footprint small; it allocates little and rarely.
    // SAFETY: mallopt only tunes the allocator; called before the agent's work starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("shoal agent runs containers and must run as root");
    }
    shoal_api::meta::check_name(&a.name, true)
        .map_err(|why| anyhow::anyhow!("--name {:?}: {why}", a.name))?;
    let runtime = find_runtime(&a.runtime)?;
    let monitor_exe = find_monitor(a.monitor)?;
    let labels = super::sim::parse_labels(&a.labels)?;
    std::fs::create_dir_all(&a.data_dir)?;
    let data_dir = a.data_dir.canonicalize()?;
    let advertise = a.advertise_addr.or(match a.listen.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    });
    // The node API serves at these: its certificate says so.
    let mut sans: Vec<String> = advertise.iter().map(|ip| ip.to_string()).collect();
    if !a.listen.ip().is_unspecified() {
        sans.push(a.listen.ip().to_string());
    }
    sans.dedup();
    // Joining comes first: a node the cluster refuses changes nothing on this machine.
    let server = match &a.join {
        Some(url) => {
            let token = a.token.as_deref().unwrap_or_default();
            super::join::join(url, token, &a.name, sans.clone(), &data_dir).await?;
            url.clone()
        }
        None => ctx.server.clone(),
    };
    let paths = super::join::NodeCredentials::under(&data_dir);
    let joined = paths.load()?;
    if let Some((_, certified)) = &joined {
        if certified.identity.name != a.name {
            anyhow::bail!(
                "--name {:?}: this node joined the cluster as {:?} ({}); use that name, or another --data-dir",
                a.name,
                certified.identity.name,
                paths.cert.display()
            );
        }
    }
    if joined.is_none() && server.starts_with("https://") {
        anyhow::bail!(
            "this node has not joined the cluster at {server}: give --join URL --token T (from `shoal token create` on the cluster)"
        );
    }
    if joined.is_none() && !a.listen.ip().is_loopback() && !a.insecure {
        anyhow::bail!(
            "--listen {}: without a certificate (a node joins with --join) the node API is plaintext; serve it on loopback, or pass --insecure on a trusted network",
            a.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", a.listen))?;
    let net = network::Network::new(Arc::new(Netlink), &data_dir, &a.bridge, a.subnet)
        .with_pool(a.netns_pool, &data_dir);
    net.ensure_bridge()
        .await
        .map_err(|e| anyhow::anyhow!("--bridge {} --subnet {}: {e}", a.bridge, a.subnet))?;
    if a.no_egress {
        tracing::info!("no egress NAT: containers reach only this node and their networks");
    } else {
        egress::ensure(&a.bridge, a.subnet)
            .map_err(|e| anyhow::anyhow!("egress NAT for {}: {e}", a.subnet))?;
    }
    let upstreams = if a.dns_upstream.is_empty() {
        dns::upstreams_of(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        a.dns_upstream
    };
    let resolver = Dns::new(upstreams, (a.subnet.base, a.subnet.prefix));
    let dns_at = std::net::SocketAddr::new(net.gateway().into(), 53);
    let serving_dns = resolver
        .clone()
        .serve(dns_at)
        .await
        .map_err(|e| anyhow::anyhow!("the containers' DNS resolver on {dns_at}: {e}"))?;
    tokio::spawn(serving_dns);
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(net.clone().keep_pool_filled(shutdown.clone()));
    let ports = shoal_agent::container::ports::PortTable::with_kernel(&a.bridge);
    let overlay = Overlay::new(
        Arc::new(OverlayNetlink::new(&data_dir)),
        Arc::new(Nft),
        advertise,
        Some(resolver),
        Some(ports.clone()),
    );
    let executor = Arc::new(RuncExecutor::new(RuncConfig {
        data_dir: data_dir.clone(),
        runtime: runtime.display().to_string(),
        monitor_exe,
        pull: PullOptions {
            insecure_registries: a.insecure_registry,
        },
        stop_grace: a.stop_grace_period,
        log_max_size: 10 << 20,
        log_max_files: 3,
        network: Some(net),
        ports,
        overlay: Some(overlay),
    }));
    let sys = nix::sys::sysinfo::sysinfo()?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let node = NodeConfig {
        name: a.name.clone(),
        labels,
        cpu: cpus as f64,
        memory_bytes: sys.ram_total(),
        // Where the API server reaches the node API: the listen address, or on a
        // wildcard listen the advertised one.
        address: match advertise {
            Some(ip) if a.listen.ip().is_unspecified() => {
                std::net::SocketAddr::new(ip.into(), a.listen.port()).to_string()
            }
            _ => a.listen.to_string(),
        },
        role: "worker".into(),
        pipelines: Some(shoal_agent::pipelines::PipelineDirs {
            data: a.data_dir.join("pipelines"),
            // Memory buffers: shared memory, kept apart per node (a test cluster's
            // hosts share one /dev/shm).
            memory: std::path::Path::new("/dev/shm/shoal-pipelines").join(&a.name),
        }),
    };
    let creds = joined.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
    let channel = shoal_wire::lazy_channel(&server, &creds)?;
    eprintln!("shoal agent: node {} on {server}", a.name);
    let agent = tokio::spawn(run_node(channel.clone(), node, executor, shutdown.clone()));
    let node_api = NodeApi::new(&data_dir, &runtime.display().to_string());
    let tls = match joined {
        Some((creds, certified)) => {
            let (Some(identity), Some(ca)) = (creds.identity, creds.ca_pem) else {
                anyhow::bail!("{}: incomplete credentials", paths.cert.display());
            };
            tokio::spawn(super::join::keep_renewed(
                channel,
                paths,
                certified,
                identity.clone(),
                sans,
            ));
            Some(shoal_wire::TlsServer::new(identity, &ca)?)
        }
        None => None,
    };
    tokio::spawn(serve_node_api(node_api, listener, tls, shutdown.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Containers keep running under their monitors; a restarted agent finds them.
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), agent).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), pool).await;
    Ok(ExitCode::SUCCESS)
}

/// Serves the node API until `shutdown`: with `tls`, to the cluster's servers only
/// (a certificate of the server role); without, plaintext to whoever reaches it.
async fn serve_node_api(
    node_api: NodeApi,
    listener: tokio::net::TcpListener,
    tls: Option<shoal_wire::TlsServer>,
    shutdown: CancellationToken,
) {
    use shoal_wire::pb::node_server::NodeServer;
    let secured = tls.is_some();
    let servers_only = move |req: tonic::Request<()>| {
        if !secured {
            return Ok(req);
        }
        let caller = req
            .extensions()
            .get::<shoal_wire::Peer>()
            .and_then(|p| p.client.clone());
        match caller {
            Some(c) if c.identity.role == shoal_pki::Role::Server => Ok(req),
            _ => Err(tonic::Status::permission_denied(
                "the node API serves the cluster's servers only",
            )),
        }
    };
    let service = NodeServer::with_interceptor(node_api, servers_only);
    let router = tonic::transport::Server::builder().add_service(service);
    let served = match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown.cancelled_owned())
                .await
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "node API stopped");
    }
}
