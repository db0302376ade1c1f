//! The node network: every container gets its own network namespace on the node's
//! bridge (`shoal0`, as docker0): a veth pair, an address from the bridge's subnet and a
//! default route through the bridge. Published ports are served by a TCP proxy in the
//! agent (`ports.rs`), as docker-proxy does.
//!
//! Addresses are claimed as files (`<data>/network/ips/<address>` holding the container
//! id, with `<data>/network/containers/<id>` to find it again without a scan), so they
//! survive agent restarts and are never handed out twice. Namespaces are made ahead of
//! need by the pool (`netns_pool.rs`) and handed over when a task starts. Netlink,
//! mounts and namespaces are behind [`NetOps`], so the bookkeeping is tested without
//! root and the real thing end to end.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

/// The bridge's default name (as docker0).
pub const BRIDGE: &str = "shoal0";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("{what}: {why}")]
    Platform { what: String, why: String },
    #[error("network state in {path}: {why}")]
    State { path: PathBuf, why: String },
}

fn platform(what: impl Into<String>) -> impl FnOnce(String) -> NetError {
    let what = what.into();
    move |why| NetError::Platform { what, why }
}

/// A subnet: the bridge takes the first address, containers the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.base);
        let size = 1u32 << (32 - u32::from(self.prefix));
        // Network address, gateway and broadcast excluded.
        (base + 2..base + size - 1).map(Ipv4Addr::from)
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (base, prefix) = shoal_api::parse_cidr(s)?;
        Ok(Subnet { base, prefix })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Default for Subnet {
    fn default() -> Self {
        Subnet {
            base: Ipv4Addr::new(172, 30, 0, 0),
            prefix: 16,
        }
    }
}

/// The kernel side: the bridge, a container's namespace and its link.
#[async_trait]
pub trait NetOps: Send + Sync {
    /// Creates the bridge with the gateway address unless it exists; brings it up.
    async fn ensure_bridge(&self, bridge: &str, subnet: Subnet) -> Result<(), String>;
    /// A new, empty network namespace, kept alive by a bind mount at `path`.
    async fn create_netns(&self, path: &Path) -> Result<(), String>;
    /// A veth pair: `host_if` on the bridge, its peer `eth0` in the namespace with
    /// `ip`, lo up, and a default route through the gateway.
    async fn connect(
        &self,
        netns: &Path,
        bridge: &str,
        host_if: &str,
        ip: Ipv4Addr,
        subnet: Subnet,
    ) -> Result<(), String>;
    /// Unmounts and removes the namespace (its veth pair goes with it).
    async fn remove_netns(&self, path: &Path) -> Result<(), String>;
    /// Keeps the namespace at `from` at `to` instead (`to` does not exist yet).
    async fn move_netns(&self, from: &Path, to: &Path) -> Result<(), String>;
    /// Whether `path` holds a namespace (a bind mount of one, not a plain file).
    fn holds_netns(&self, path: &Path) -> bool;
}

/// One node's container network.
#[derive(Clone)]
pub struct Network {
    ops: Arc<dyn NetOps>,
    bridge: String,
    subnet: Subnet,
    /// `<address>`, holding the container id: the claim, unique by create_new.
    ips: PathBuf,
    /// `<container id>`, holding its address: the lookup.
    owners: PathBuf,
    netns: PathBuf,
    /// Namespaces prepared ahead of need; None: each is made when its task starts.
    pub(super) pool: Option<Arc<super::netns_pool::Pool>>,
}

/// A container's place on the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Network({} {})", self.bridge, self.subnet)
    }
}

impl Network {
    pub fn new(ops: Arc<dyn NetOps>, data_dir: &Path, bridge: &str, subnet: Subnet) -> Self {
        Network {
            ops,
            bridge: bridge.to_string(),
            subnet,
            ips: data_dir.join("network").join("ips"),
            owners: data_dir.join("network").join("containers"),
            netns: data_dir.join("netns"),
            pool: None,
        }
    }

    /// Keeps `size` namespaces ready (see `netns_pool.rs`; 0: none).
    pub fn with_pool(mut self, size: usize, data_dir: &Path) -> Self {
        self.pool = (size > 0).then(|| Arc::new(super::netns_pool::Pool::new(size, data_dir)));
        self
    }

    pub(super) fn ops(&self) -> &dyn NetOps {
        &*self.ops
    }

    pub async fn ensure_bridge(&self) -> Result<(), NetError> {
        self.ops
            .ensure_bridge(&self.bridge, self.subnet)
            .await
            .map_err(platform(format!(
                "bridge {} ({})",
                self.bridge, self.subnet
            )))
    }

    /// The bridge's own address: the containers' gateway and resolver.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns.join(id)
    }

    /// The container's address, if it has one: its lookup file, confirmed by the claim.
    pub fn address_of(&self, id: &str) -> Option<Ipv4Addr> {
        let ip: Ipv4Addr = std::fs::read_to_string(self.owners.join(id))
            .ok()?
            .parse()
            .ok()?;
        let owner = std::fs::read_to_string(self.ips.join(ip.to_string())).ok()?;
        (owner == id).then_some(ip)
    }

    /// An address for `id` (a container, or a pool slot), kept if it has one.
    pub(super) fn claim(&self, id: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.address_of(id) {
            return Ok(ip);
        }
        std::fs::create_dir_all(&self.ips).map_err(state(&self.ips))?;
        std::fs::create_dir_all(&self.owners).map_err(state(&self.owners))?;
        for ip in self.subnet.hosts() {
            let file = self.ips.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(id.as_bytes()).map_err(state(&file))?;
                    // An agent dying right here leaves this address claimed but unused
                    // until the data directory is cleared: one address, not a conflict.
                    let owner = self.owners.join(id);
                    std::fs::write(&owner, ip.to_string()).map_err(state(&owner))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(state(&file)(e)),
            }
        }
        Err(NetError::Exhausted(self.subnet.to_string()))
    }

    /// Hands `ip`, claimed by `from`, to `to` (which has no address): the claim file
    /// is replaced in one rename, so the address is never unclaimed on the way.
    pub(super) fn hand_over(&self, ip: Ipv4Addr, from: &str, to: &str) -> Result<(), NetError> {
        let owner = self.owners.join(to);
        std::fs::write(&owner, ip.to_string()).map_err(state(&owner))?;
        let claim = self.ips.join(ip.to_string());
        let next = self.ips.join(format!(".{ip}.{to}"));
        std::fs::write(&next, to).map_err(state(&next))?;
        std::fs::rename(&next, &claim).map_err(state(&claim))?;
        let _ = std::fs::remove_file(self.owners.join(from));
        Ok(())
    }

    /// The ids holding addresses whose names start with `prefix`.
    pub(super) fn owners_starting(&self, prefix: &str) -> Vec<String> {
        std::fs::read_dir(&self.owners)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    pub(super) fn release(&self, id: &str) {
        if let Some(ip) = self.address_of(id) {
            let _ = std::fs::remove_file(self.ips.join(ip.to_string()));
        }
        let _ = std::fs::remove_file(self.owners.join(id));
    }

    /// Gives container `id` a namespace on the bridge and an address, from the pool
    /// when it has one ready; undone on error.
    pub async fn attach(&self, id: &str) -> Result<Attachment, NetError> {
        if let Some(pool) = self.pool.as_ref().filter(|_| self.address_of(id).is_none()) {
            if let Some(attached) = pool.hand_out(self, id).await {
                return Ok(attached);
            }
        }
        self.make(id, &self.netns_path(id), &host_if(id)).await
    }

    /// A new namespace at `netns` on the bridge, with an address claimed for `id` and
    /// the host end `host_if`; undone on error.
    pub(super) async fn make(
        &self,
        id: &str,
        netns: &Path,
        host_if: &str,
    ) -> Result<Attachment, NetError> {
        let ip = self.claim(id)?;
        let result = async {
            let dir = netns.parent().unwrap_or(&self.netns);
            std::fs::create_dir_all(dir).map_err(state(dir))?;
            // A namespace left by an attempt that died half way is replaced.
            if netns.exists() {
                let _ = self.ops.remove_netns(netns).await;
            }
            self.ops
                .create_netns(netns)
                .await
                .map_err(platform("creating the network namespace"))?;
            self.ops
                .connect(netns, &self.bridge, host_if, ip, self.subnet)
                .await
                .map_err(platform(format!("connecting {ip} to {}", self.bridge)))
        }
        .await;
        match result {
            Ok(()) => Ok(Attachment {
                ip,
                netns: netns.to_path_buf(),
            }),
            Err(e) => {
                self.remove(id, netns).await;
                Err(e)
            }
        }
    }

    /// Removes the container's namespace and frees its address; idempotent.
    pub async fn detach(&self, id: &str) {
        self.remove(id, &self.netns_path(id)).await;
    }

    /// Removes the namespace at `netns` and frees `id`'s address; idempotent.
    pub(super) async fn remove(&self, id: &str, netns: &Path) {
        if netns.exists() {
            if let Err(e) = self.ops.remove_netns(netns).await {
                tracing::warn!(container = %id, error = %e, "could not remove the network namespace");
            }
        }
        self.release(id);
    }
}

/// A failed file operation on the network's state at `path`.
fn state(path: &Path) -> impl FnOnce(std::io::Error) -> NetError {
    let path = path.to_path_buf();
    move |why| NetError::State {
        path,
        why: why.to_string(),
    }
}

/// The host end's name: at most 15 bytes, unique per container.
fn host_if(id: &str) -> String {
    format!("sh{}", id_tail(id, 10))
}

/// The last `n` letters and digits of a container id: enough to tell its links apart
/// within the kernel's 15 bytes.
pub(super) fn id_tail(id: &str, n: usize) -> String {
    let tail: Vec<char> = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .rev()
        .take(n)
        .collect();
    tail.into_iter().rev().collect()
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
