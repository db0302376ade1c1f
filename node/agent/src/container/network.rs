//! The node network: every container gets its own network namespace on the node's
//! bridge (`shoal0`, as docker0): a veth pair, an address from the bridge's subnet and a
//! default route through the bridge. Published ports are served by a TCP proxy in the
//! agent (`ports.rs`), as docker-proxy does.
//!
//! Addresses are claimed as files (`<data>/network/ips/<address>` holding the container
//! id, with `<data>/network/containers/<id>` to find it again without a scan), so they
//! survive agent restarts and are never handed out twice. Netlink, mounts
//! and namespaces are behind [`NetOps`], so the bookkeeping is tested without root and
//! the real thing end to end.

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
        }
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

    fn claim(&self, id: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.address_of(id) {
            return Ok(ip);
        }
        let state = |path: &Path| {
            let path = path.to_path_buf();
            move |why: std::io::Error| NetError::State {
                path,
                why: why.to_string(),
            }
        };
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

    fn release(&self, id: &str) {
        if let Some(ip) = self.address_of(id) {
            let _ = std::fs::remove_file(self.ips.join(ip.to_string()));
        }
        let _ = std::fs::remove_file(self.owners.join(id));
    }

    /// Gives container `id` a namespace on the bridge and an address; undone on error.
    pub async fn attach(&self, id: &str) -> Result<Attachment, NetError> {
        let ip = self.claim(id)?;
        let netns = self.netns_path(id);
        let result = async {
            std::fs::create_dir_all(&self.netns).map_err(|e| NetError::State {
                path: self.netns.clone(),
                why: e.to_string(),
            })?;
            // A namespace left by an attempt that died half way is replaced.
            if netns.exists() {
                let _ = self.ops.remove_netns(&netns).await;
            }
            self.ops
                .create_netns(&netns)
                .await
                .map_err(platform("creating the network namespace"))?;
            self.ops
                .connect(&netns, &self.bridge, &host_if(id), ip, self.subnet)
                .await
                .map_err(platform(format!("connecting {ip} to {}", self.bridge)))
        }
        .await;
        match result {
            Ok(()) => Ok(Attachment { ip, netns }),
            Err(e) => {
                self.detach(id).await;
                Err(e)
            }
        }
    }

    /// Removes the container's namespace and frees its address; idempotent.
    pub async fn detach(&self, id: &str) {
        let netns = self.netns_path(id);
        if netns.exists() {
            if let Err(e) = self.ops.remove_netns(&netns).await {
                tracing::warn!(container = %id, error = %e, "could not remove the network namespace");
            }
        }
        self.release(id);
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
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeOps {
        calls: Mutex<Vec<String>>,
        fail_connect: bool,
    }

    #[async_trait]
    impl NetOps for FakeOps {
        async fn ensure_bridge(&self, _: &str, subnet: Subnet) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!("bridge {subnet}"));
            Ok(())
        }
        async fn create_netns(&self, path: &Path) -> Result<(), String> {
            std::fs::write(path, "").map_err(|e| e.to_string())?;
            self.calls.lock().unwrap().push("netns".into());
            Ok(())
        }
        async fn connect(
            &self,
            _: &Path,
            _: &str,
            host_if: &str,
            ip: Ipv4Addr,
            _: Subnet,
        ) -> Result<(), String> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("connect {host_if} {ip}"));
            if self.fail_connect {
                return Err("no such device".into());
            }
            Ok(())
        }
        async fn remove_netns(&self, path: &Path) -> Result<(), String> {
            std::fs::remove_file(path).map_err(|e| e.to_string())?;
            self.calls.lock().unwrap().push("remove".into());
            Ok(())
        }
    }

    #[tokio::test]
    async fn addresses_are_unique_kept_per_container_and_freed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let subnet: Subnet = "10.9.0.0/29".parse().expect("subnet");
        let net = Network::new(Arc::new(FakeOps::default()), dir.path(), BRIDGE, subnet);
        let a = net.attach("shoal-a").await.expect("a");
        let b = net.attach("shoal-b").await.expect("b");
        assert_eq!(a.ip, Ipv4Addr::new(10, 9, 0, 2), "after the gateway");
        assert_eq!(b.ip, Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(
            net.attach("shoal-a").await.expect("again").ip,
            a.ip,
            "same container, same address"
        );
        for id in ["c", "d", "e"] {
            net.attach(id).await.expect("room for six");
        }
        assert!(matches!(net.attach("f").await, Err(NetError::Exhausted(_))));
        net.detach("shoal-a").await;
        assert!(!a.netns.exists());
        assert_eq!(net.attach("g").await.expect("freed").ip, a.ip);
    }

    #[tokio::test]
    async fn a_failed_attach_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ops = Arc::new(FakeOps {
            fail_connect: true,
            ..Default::default()
        });
        let net = Network::new(ops.clone(), dir.path(), BRIDGE, Subnet::default());
        let err = net.attach("shoal-x").await.expect_err("connect fails");
        assert!(err.to_string().contains("no such device"), "{err}");
        assert_eq!(net.address_of("shoal-x"), None);
        let expected = [
            "netns".to_string(),
            format!("connect {} 172.30.0.2", host_if("shoal-x")),
            "remove".to_string(),
        ];
        assert_eq!(*ops.calls.lock().unwrap(), expected);
    }

    #[test]
    fn subnets_parse_strictly() {
        assert_eq!(
            "172.30.0.0/16".parse::<Subnet>().expect("ok"),
            Subnet::default()
        );
        assert!("172.30.0.1/16".parse::<Subnet>().is_err());
        assert!("172.30.0.0/31".parse::<Subnet>().is_err());
        assert!("nonsense".parse::<Subnet>().is_err());
        assert_eq!(host_if("shoal-0123456789abcdef"), "sh6789abcdef");
    }
}
