//! Published ports: the agent listens on the node's port and forwards each connection to
//! a container's address, as docker-proxy does; it needs no packet filter and works from
//! the node itself (127.0.0.1:PORT) as from outside.
//!
//! A port in `host` mode belongs to one container. A port in `ingress` mode is shared by
//! the tasks of one service on this node, connections going round-robin among them (the
//! node's part of Swarm's routing mesh; reaching tasks on other nodes needs the overlay
//! network).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use shoal_api::{PortSpec, Protocol, PublishMode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Every port this node publishes.
#[derive(Clone, Default)]
pub struct PortTable(Arc<Mutex<HashMap<u16, Published>>>);

impl std::fmt::Debug for PortTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortTable")
    }
}

struct Published {
    /// The service (ingress) or container (host) the port belongs to.
    owner: String,
    backends: Vec<(String, SocketAddr)>,
    next: usize,
    stop: CancellationToken,
}

/// One container's share of the table; dropping it withdraws the container, and closes
/// ports no container serves any more.
pub struct PortLease {
    table: PortTable,
    id: String,
    ports: Vec<u16>,
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

impl PortTable {
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
            if p.protocol == Protocol::Udp {
                return Err(format!(
                    "publishing udp port {port}: only tcp ports can be published so far"
                ));
            }
            let owner = match (p.mode, service) {
                (PublishMode::Ingress, Some(svc)) => format!("service/{svc}"),
                _ => format!("container {id}"),
            };
            let backend = (id.to_string(), SocketAddr::from((ip, p.target)));
            if let Some(published) = table.get_mut(&port) {
                if published.owner != owner {
                    return Err(format!(
                        "publishing port {port}: {} publishes it on this node",
                        published.owner
                    ));
                }
                published.backends.retain(|(b, _)| b != id);
                published.backends.push(backend);
            } else {
                let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                    .await
                    .map_err(|e| format!("publishing port {port}: {e}"))?;
                let stop = CancellationToken::new();
                tokio::spawn(serve(self.clone(), port, listener, stop.clone()));
                table.insert(
                    port,
                    Published {
                        owner,
                        backends: vec![backend],
                        next: 0,
                        stop,
                    },
                );
            }
            lease.ports.push(port);
        }
        Ok(lease)
    }

    async fn withdraw(&self, id: &str, ports: &[u16]) {
        let mut table = self.0.lock().await;
        for port in ports {
            let Some(published) = table.get_mut(port) else {
                continue;
            };
            published.backends.retain(|(b, _)| b != id);
            if published.backends.is_empty() {
                published.stop.cancel();
                table.remove(port);
            }
        }
    }

    /// The next backend for a connection to `port`, round-robin.
    async fn pick(&self, port: u16) -> Option<SocketAddr> {
        let mut table = self.0.lock().await;
        let published = table.get_mut(&port)?;
        let n = published.backends.len();
        if n == 0 {
            return None;
        }
        published.next = (published.next + 1) % n;
        Some(published.backends[published.next].1)
    }
}

async fn serve(table: PortTable, port: u16, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (mut inbound, from) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(port, error = %e, "accept on a published port");
                    continue;
                }
            },
        };
        let Some(to) = table.pick(port).await else {
            continue;
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut outbound = match TcpStream::connect(to).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%from, %to, error = %e, "published port: container unreachable");
                    return;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn port(target: u16, published: u16, mode: PublishMode) -> PortSpec {
        PortSpec {
            target,
            published: Some(published),
            protocol: Protocol::Tcp,
            mode,
        }
    }

    /// A backend that answers each connection with its name.
    async fn backend(name: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let p = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        p
    }

    async fn ask(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn ingress_ports_are_shared_by_a_service_and_host_ports_are_not() {
        let (a, b) = (backend("a").await, backend("b").await);
        let free = TcpListener::bind("127.0.0.1:0").await.expect("probe");
        let published = free.local_addr().expect("addr").port();
        drop(free);
        let table = PortTable::default();
        let lo = Ipv4Addr::LOCALHOST;
        let la = table
            .publish(
                "a",
                Some("web"),
                &[port(a, published, PublishMode::Ingress)],
                lo,
            )
            .await
            .expect("a");
        // The same target port cannot differ per backend here, so each test backend
        // listens on its own port: publish b with its own target.
        let lb = table
            .publish(
                "b",
                Some("web"),
                &[port(b, published, PublishMode::Ingress)],
                lo,
            )
            .await
            .expect("b shares the port");
        let mut seen = vec![ask(published).await, ask(published).await];
        seen.sort();
        assert_eq!(
            seen,
            ["a", "b"],
            "round-robin over the service's containers"
        );
        let err = table
            .publish(
                "c",
                Some("api"),
                &[port(a, published, PublishMode::Ingress)],
                lo,
            )
            .await
            .err()
            .expect("another service");
        assert!(err.contains("service/web publishes it"), "{err}");
        let err = table
            .publish("d", None, &[port(a, published, PublishMode::Host)], lo)
            .await
            .err()
            .expect("host mode is exclusive");
        assert!(err.contains(&format!("port {published}")), "{err}");
        drop(la);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(ask(published).await, "b", "a withdrawn");
        drop(lb);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(("127.0.0.1", published)).await.is_err(),
            "closed once nobody serves it"
        );
    }
}
