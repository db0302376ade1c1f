use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_apiserver::{
    Access, AgentService, ApiService, ClusterPki, Dispatcher, HeartbeatConfig, ListenConfig,
    NodeCerts, PeerTable, PipelineTable, StatusWriter, Values, Webhooks, CONTROLLER_LEADER_KEY,
};
use shoal_pki::{Identity, Role};
use shoal_reconcile::{CancellationToken, Informers, LeaderElection};
use shoal_store::{ObjectStore, Store};
use shoal_wire::{Credentials, LiveIdentity, TlsServer};

use super::server_tls;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Where the embedded store keeps its data.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address for the API: mutual TLS with certificates from the cluster CA (or
    /// plaintext on loopback with --insecure).
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Use etcd instead of the embedded store: etcd://host:port[,host:port]
    #[arg(long)]
    store: Option<String>,
    /// A certificate (PEM) to serve the API with instead of one from the cluster CA
    /// (clients then trust its CA with --ca-cert); clients still prove who they are
    /// with certificates from the cluster CA.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// More names or addresses for the server's certificate (it has loopback, the host
    /// name and the listen address); repeatable.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Plaintext with no client identities, on a loopback --listen only (development).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure: bool,
    /// This server's name in leader election (default: host name and process id).
    #[arg(long)]
    id: Option<String>,
    /// How long a dead leader holds the controllers before another server takes over.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    leader_ttl: Duration,
    /// How long the store keeps the history of changes (what a watch can resume
    /// from): the leader compacts what is older, as the Kubernetes API server does etcd.
    #[arg(long, default_value = "5m", value_parser = parse_retention)]
    history_retention: Duration,
    /// How often agents heartbeat; a node is down after 3 missed heartbeats (and a
    /// second's grace), and an agent cut off that long stops its tasks.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat_period: Duration,
    /// Changes a client watch may fall behind the watch cache before it is served from
    /// the store instead (tests make it small to exercise that path).
    #[arg(long, default_value_t = 16_384, hide = true)]
    watch_cache_size: usize,
    /// Turns on the GitSync webhook (`POST /hooks/gitsync/NAME`): its HMAC key, the
    /// secret the git host signs pushes with (`X-Hub-Signature-256`).
    #[arg(long)]
    webhook_secret_file: Option<PathBuf>,
    /// The cluster key, which seals the CA's key and the join tokens in the store; made
    /// on first start (default: <data-dir>/cluster.key). Every server of a cluster
    /// needs the same one.
    #[arg(long)]
    cluster_key_file: Option<PathBuf>,
    /// How long the certificates of joining nodes are valid (Swarm's default: 90
    /// days); at least 1h.
    #[arg(long, default_value = "2160h", value_parser = parse_cert_lifetime)]
    cert_lifetime: Duration,
    /// Where networks without a subnet in their manifest get one (Swarm's flag).
    #[arg(long, default_value = "10.0.0.0/8", value_parser = parse_pool)]
    default_addr_pool: shoal_controller_network::Subnet,
    /// The prefix length of each subnet cut from the default pool.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(8..=30))]
    default_addr_pool_mask_length: u8,
}

fn parse_pool(s: &str) -> Result<shoal_controller_network::Subnet, String> {
    shoal_controller_network::Subnet::parse(s)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<shoal_api::Duration>().map(|d| d.0)
}

/// A retention under a second would compact all the time and cut off every watch.
fn parse_retention(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s} is under 1s: watches could not resume"));
    }
    Ok(d)
}

fn parse_cert_lifetime(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(3600) {
        return Err(format!("{s} is under 1h"));
    }
    Ok(d)
}

/// The cluster key at `path`, made (readable by this user only) if there is none.
fn cluster_key(path: &std::path::Path) -> anyhow::Result<shoal_pki::SealKey> {
    match std::fs::read(path) {
        Ok(bytes) => shoal_pki::SealKey::from_bytes(&bytes)
            .with_context(|| format!("cluster key {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            }
            let key = shoal_pki::SealKey::generate()?;
            super::write_private(path, key.bytes())
                .with_context(|| format!("cluster key {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cluster key {}", path.display())),
    }
}

pub fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/shoal");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("shoal")
}

fn nix_is_root() -> bool {
    // /proc/self/status avoids a libc dependency in the binary for one syscall.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn")
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "shoal".into())
}

pub async fn run(a: Args) -> Outcome {
    init_logging();
    let listen = ListenConfig {
        addr: a.listen,
        insecure: a.insecure,
    };
    let data_dir = a.data_dir.unwrap_or_else(default_data_dir);
    let webhook_secret = match &a.webhook_secret_file {
        Some(path) => Some(read_secret(path)?),
        None => None,
    };
    let store: Arc<dyn Store> = shoal_store::open(a.store.as_deref(), &data_dir)
        .await
        .with_context(|| match &a.store {
            Some(url) => format!("cannot use the store {url}"),
            None => format!("cannot open the embedded store in {}", data_dir.display()),
        })?;
    let listener = listen.bind().await?;
    let id =
        a.id.unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let election = LeaderElection::new(store.clone(), CONTROLLER_LEADER_KEY, id.clone())
        .with_ttl(a.leader_ttl)
        .sole_contender(store.backend() == "embedded");
    let objects = ObjectStore::new(store.clone());
    let mirrors = data_dir.join("gitsync");
    let retention = a.history_retention;
    if a.default_addr_pool_mask_length < a.default_addr_pool.prefix_len() {
        anyhow::bail!(
            "--default-addr-pool-mask-length {} is shorter than the pool {} itself",
            a.default_addr_pool_mask_length,
            a.default_addr_pool
        );
    }
    let networks = shoal_controller_network::Config {
        pool: a.default_addr_pool,
        subnet_size: a.default_addr_pool_mask_length,
    };
    let controllers = tokio::spawn(election.run(shutdown.clone(), move |term| {
        run_controllers(objects.clone(), mirrors.clone(), retention, networks, term)
    }));
    let dispatcher = Dispatcher::start(ObjectStore::new(store.clone()), shutdown.clone());
    let heartbeat = HeartbeatConfig {
        period: a.heartbeat_period,
        missed: 3,
    };
    let status = StatusWriter::start(
        ObjectStore::new(store.clone()),
        dispatcher.clone(),
        shutdown.clone(),
    );
    let peers = PeerTable::start(ObjectStore::new(store.clone()), shutdown.clone());
    let pipelines = PipelineTable::start(ObjectStore::new(store.clone()), shutdown.clone());
    let agent = AgentService::new(
        ObjectStore::new(store.clone()),
        dispatcher,
        peers,
        pipelines,
        status,
        heartbeat,
    );
    let key_file = a
        .cluster_key_file
        .unwrap_or_else(|| data_dir.join("cluster.key"));
    let key = cluster_key(&key_file)?;
    let values = Arc::new(
        Values::bootstrap(
            ObjectStore::new(store.clone()),
            shoal_pki::SealKey::from_bytes(key.bytes())?,
        )
        .await
        .with_context(|| format!("the value keyring (cluster key {})", key_file.display()))?,
    );
    let pki = Arc::new(
        ClusterPki::bootstrap(ObjectStore::new(store.clone()), key, a.cert_lifetime)
            .await
            .with_context(|| format!("the cluster CA (cluster key {})", key_file.display()))?,
    );
    let certs = NodeCerts::start(ObjectStore::new(store.clone()), shutdown.clone());
    let security = Security::new(
        &pki,
        &a.tls_san,
        &a.tls_cert,
        &a.tls_key,
        a.listen,
        a.insecure,
    )?;
    let access = match a.insecure {
        true => Access::Open,
        false => Access::Certified(certs.clone()),
    };
    let agent = agent
        .with_pki(pki.clone(), certs.clone(), access.clone())
        .with_values(values.clone());
    let heartbeats = agent.heartbeats();
    let webhooks = Webhooks::new(ObjectStore::new(store.clone()), webhook_secret);
    let url = server_tls::local_url(listener.local_addr()?, !a.insecure);
    let admin = server_tls::admin_config((!a.insecure).then_some(&*pki), url.clone(), &data_dir)?;
    let admin_path = server_tls::write_admin_config(&admin, &data_dir)?;
    let service = ApiService::new(store.clone(), id.clone(), a.watch_cache_size)
        .with_pki(pki.clone(), certs, security.node_creds.clone())
        .with_heartbeats(heartbeats)
        .with_values(values);
    tracing::info!(
        listen = %url,
        store = store.backend(),
        id = %id,
        config = %admin_path.display(),
        "shoal server ready"
    );
    let serving = shoal_apiserver::serve(
        service,
        agent,
        webhooks,
        listener,
        security.tls.clone(),
        access,
        shutdown.clone().cancelled_owned(),
    );
    // Graceful shutdown waits for open streams (agents, `get -w`), which never end on
    // their own: give them a moment, then go.
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let served = tokio::select! {
        r = serving => r,
        _ = grace => Ok(()),
    };
    shutdown.cancel();
    let _ = controllers.await;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The webhook key: the file's content without a trailing newline (what an editor or
/// `echo` leaves is not part of the secret the git host was given).
fn read_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path)
        .with_context(|| format!("--webhook-secret-file {}: cannot read it", path.display()))?;
    let secret = text.trim_ascii_end().to_vec();
    if secret.len() < 16 {
        anyhow::bail!(
            "--webhook-secret-file {}: the secret has {} bytes; use at least 16 (openssl rand -hex 32)",
            path.display(),
            secret.len()
        );
    }
    Ok(secret)
}

/// Every controller, and the history compactor, for as long as this server leads.
async fn run_controllers(
    objects: ObjectStore,
    mirrors: PathBuf,
    retention: Duration,
    networks: shoal_controller_network::Config,
    term: CancellationToken,
) {
    let compactor = {
        let (objects, stop) = (objects.clone(), term.clone().cancelled_owned());
        tokio::spawn(async move { objects.compact_history(retention, stop).await })
    };
    // One cache per kind for all of them, for as long as the term lasts.
    let informers = Informers::new(objects, term.clone());
    let all = vec![
        compactor,
        tokio::spawn(shoal_controller_gc::run(informers.clone(), term.clone())),
        tokio::spawn(shoal_controller_node::run(informers.clone(), term.clone())),
        tokio::spawn(shoal_controller_scheduler::run(
            informers.clone(),
            term.clone(),
        )),
        tokio::spawn(shoal_controller_service::run(
            informers.clone(),
            term.clone(),
        )),
        tokio::spawn(shoal_controller_network::run(
            informers.clone(),
            networks,
            term.clone(),
        )),
        tokio::spawn(shoal_controller_gitsync::run(
            informers.clone(),
            mirrors,
            term.clone(),
        )),
    ];
    term.cancelled().await;
    for c in all {
        let _ = c.await;
    }
}

async fn signal_shutdown(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

/// What this server presents: its listener's TLS (None with --insecure), and the
/// identity it calls nodes' APIs with (renewed in place while it runs).
struct Security {
    tls: Option<TlsServer>,
    node_creds: Option<Credentials>,
}

impl Security {
    fn new(
        pki: &Arc<ClusterPki>,
        tls_san: &[String],
        tls_cert: &Option<PathBuf>,
        tls_key: &Option<PathBuf>,
        listen: SocketAddr,
        insecure: bool,
    ) -> anyhow::Result<Security> {
        if insecure {
            return Ok(Security {
                tls: None,
                node_creds: None,
            });
        }
        let identity = Identity {
            role: Role::Server,
            name: format!("server-{}", host_name()),
        };
        let names = server_tls::server_names(listen, tls_san);
        let own = server_tls::own_identity(pki.clone(), identity, names)?;
        let serving = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p)
                        .with_context(|| format!("--tls-cert/--tls-key {}", p.display()))
                };
                LiveIdentity::from_pem(&read(cert)?, &read(key)?)
                    .context("--tls-cert and --tls-key")?
            }
            _ => own.clone(),
        };
        let ca = pki.ca().cert_pem().as_bytes();
        Ok(Security {
            tls: Some(TlsServer::new(serving, ca)?),
            node_creds: Some(server_tls::node_credentials(pki, own)),
        })
    }
}
