//! Published ports: connections from beyond the node are DNATed to a backend in the
//! kernel (nftables, `kernel.rs`), so the task sees its client's own address; the agent
//! also listens on the node's port and relays each connection, as docker-proxy does,
//! for the node itself (127.0.0.1:PORT) and its own containers (`proxy.rs`).
//!
//! A port in `host` mode belongs to one container. A port in `ingress` mode belongs to
//! one service: its backends are the service's serving tasks on every node, at their
//! addresses on the `ingress` network, as the routing mesh's peer set lists them
//! ([`PortTable::set_mesh`]), so the port answers on every node. Until the mesh lists
//! a port (or for a task that is not on `ingress`), its backends are the service's
//! containers on this node.

mod kernel;
mod proxy;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use shoal_api::{PortSpec, Protocol, PublishMode};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use kernel::kernel_table;

/// Every port this node publishes.
#[derive(Clone, Default)]
pub struct PortTable(
    Arc<Mutex<HashMap<Key, Published>>>,
    Option<Arc<KernelPorts>>,
);

/// The kernel's half: connections from beyond the node are DNATed to the backends in
/// nftables (`nat prerouting`), so the task sees the client's own address; the proxy
/// serves the node itself (127.0.0.1) and its containers, which the kernel cannot
/// DNAT back to a bridge they sit on.
pub struct KernelPorts {
    bridge: String,
}

/// A published port: its number and protocol.
type Key = (u16, Protocol);

impl std::fmt::Debug for PortTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortTable")
    }
}

struct Published {
    /// The service (ingress) or container (host) the port belongs to.
    owner: String,
    /// This node's containers that publish it.
    local: Vec<(String, SocketAddr)>,
    /// The routing mesh's backends (the service's serving tasks on every node), once
    /// the mesh lists the port.
    mesh: Option<Vec<SocketAddr>>,
    next: usize,
    stop: CancellationToken,
}

impl Published {
    /// Where connections go: the mesh's backends when it lists the port.
    fn backends(&self) -> Vec<SocketAddr> {
        match &self.mesh {
            Some(mesh) => mesh.clone(),
            None => self.local.iter().map(|(_, a)| *a).collect(),
        }
    }

    fn unused(&self) -> bool {
        self.local.is_empty() && self.mesh.is_none()
    }
}

/// A port the routing mesh publishes on every node.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshPort {
    pub published: u16,
    pub protocol: Protocol,
    pub service: String,
    /// The serving tasks' addresses on `ingress`, with the target port.
    pub backends: Vec<SocketAddr>,
}

/// One container's share of the table; dropping it withdraws the container, and closes
/// ports nothing serves any more.
pub struct PortLease {
    table: PortTable,
    id: String,
    ports: Vec<Key>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let (table, id, ports) = (self.table.clone(), self.id.clone(), self.ports.clone());
        // Drop cannot wait for the lock; the withdrawal follows at once on the runtime.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { table.withdraw(&id, &ports).await });
        }
    }
}

fn service_owner(service: &str) -> String {
    format!("service/{service}")
}

impl PortTable {
    /// A table whose ports are also served in the kernel for clients beyond the node
    /// (`bridge`: the node bridge its containers are on).
    pub fn with_kernel(bridge: &str) -> Self {
        PortTable(
            Arc::default(),
            Some(Arc::new(KernelPorts {
                bridge: bridge.to_string(),
            })),
        )
    }

    /// Rewrites the kernel's table to `table` (under its lock, so writes keep order).
    async fn sync_kernel(&self, table: &HashMap<Key, Published>) {
        let Some(kernel) = &self.1 else { return };
        let script = kernel::render_kernel(&kernel.bridge, table);
        let written =
            tokio::task::spawn_blocking(move || crate::container::vip::nft(&script)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "published ports: could not write the kernel's table")
            }
            Err(e) => tracing::warn!(error = %e, "published ports: the nft task failed"),
        }
    }

    /// Listens on `key` on every address of the node; the token stops it.
    async fn listen(&self, key: Key) -> Result<CancellationToken, String> {
        let stop = CancellationToken::new();
        let failed =
            |e: std::io::Error| format!("publishing port {}/{}: {e}", key.0, key.1.as_str());
        match key.1 {
            Protocol::Tcp => {
                let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, key.0))
                    .await
                    .map_err(failed)?;
                tokio::spawn(proxy::serve(self.clone(), key, listener, stop.clone()));
            }
            Protocol::Udp => {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, key.0))
                    .await
                    .map_err(failed)?;
                tokio::spawn(proxy::serve_udp(self.clone(), key, socket, stop.clone()));
            }
        }
        Ok(stop)
    }

    /// Publishes container `id`'s ports (`service`: the service it belongs to, which
    /// may share ingress ports); Err names the port that cannot be had, and publishes
    /// none of them.
    pub async fn publish(
        &self,
        id: &str,
        service: Option<&str>,
        ports: &[PortSpec],
        ip: Ipv4Addr,
    ) -> Result<PortLease, String> {
        let mut table = self.0.lock().await;
        let mut lease = PortLease {
            table: self.clone(),
            id: id.to_string(),
            ports: Vec::new(),
        };
        for p in ports {
            let Some(port) = p.published else { continue };
            let key = (port, p.protocol);
            let owner = match (p.mode, service) {
                (PublishMode::Ingress, Some(svc)) => service_owner(svc),
                _ => format!("container {id}"),
            };
            let backend = (id.to_string(), SocketAddr::from((ip, p.target)));
            if let Some(published) = table.get_mut(&key) {
                if published.owner != owner {
                    return Err(format!(
                        "publishing port {port}: {} publishes it on this node",
                        published.owner
                    ));
                }
                published.local.retain(|(b, _)| b != id);
                published.local.push(backend);
            } else {
                let stop = self.listen(key).await?;
                table.insert(
                    key,
                    Published {
                        owner,
                        local: vec![backend],
                        mesh: None,
                        next: 0,
                        stop,
                    },
                );
            }
            lease.ports.push(key);
        }
        if !lease.ports.is_empty() {
            self.sync_kernel(&table).await;
        }
        Ok(lease)
    }

    /// The routing mesh's ports as the peer set lists them now: each answers on this
    /// node whether or not the service runs here. A port a container of another owner
    /// holds here stays theirs (said in the log).
    pub async fn set_mesh(&self, ports: &[MeshPort]) {
        let mut table = self.0.lock().await;
        let mut changed = false;
        let listed: HashMap<Key, &MeshPort> = ports
            .iter()
            .map(|p| ((p.published, p.protocol), p))
            .collect();
        let gone: Vec<Key> = table
            .iter()
            .filter(|(k, p)| p.mesh.is_some() && !listed.contains_key(*k))
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            changed = true;
            if let Some(p) = table.get_mut(&key) {
                p.mesh = None;
                if p.unused() {
                    p.stop.cancel();
                    table.remove(&key);
                }
            }
        }
        for (key, port) in listed {
            let owner = service_owner(&port.service);
            let mut backends = port.backends.clone();
            backends.sort();
            match table.get_mut(&key) {
                Some(p) if p.owner != owner => {
                    tracing::warn!(port = key.0, holder = %p.owner, service = %port.service, "the mesh cannot publish a port held here");
                }
                Some(p) => {
                    if p.mesh.as_ref() != Some(&backends) {
                        p.mesh = Some(backends);
                        changed = true;
                    }
                }
                None => {
                    // The kernel serves the port for clients beyond the node even if the
                    // node's own socket cannot be had.
                    let stop = self.listen(key).await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "the mesh's port on this node");
                        CancellationToken::new()
                    });
                    table.insert(
                        key,
                        Published {
                            owner,
                            local: Vec::new(),
                            mesh: Some(backends),
                            next: 0,
                            stop,
                        },
                    );
                    changed = true;
                }
            }
        }
        if changed {
            self.sync_kernel(&table).await;
        }
    }

    async fn withdraw(&self, id: &str, ports: &[Key]) {
        let mut table = self.0.lock().await;
        for port in ports {
            let Some(published) = table.get_mut(port) else {
                continue;
            };
            published.local.retain(|(b, _)| b != id);
            if published.unused() {
                published.stop.cancel();
                table.remove(port);
            }
        }
        if !ports.is_empty() {
            self.sync_kernel(&table).await;
        }
    }

    /// Whether the node publishes `key` (port, protocol).
    pub async fn serves(&self, key: (u16, Protocol)) -> bool {
        self.0.lock().await.contains_key(&key)
    }

    /// The next backend for a connection to `key`, round-robin.
    async fn pick(&self, key: Key) -> Option<SocketAddr> {
        let mut table = self.0.lock().await;
        let published = table.get_mut(&key)?;
        let backends = published.backends();
        if backends.is_empty() {
            return None;
        }
        published.next = (published.next + 1) % backends.len();
        Some(backends[published.next])
    }
}

#[cfg(test)]
mod tests;
