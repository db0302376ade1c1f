//! Published ports: connections from beyond the node are DNATed to a container in the
//! kernel (nftables), so the container sees the client's address; the agent also
//! listens on the node's port and forwards each connection, as docker-proxy does, for
//! the node itself (127.0.0.1:PORT) and its own containers.
//!
//! TCP connections are relayed as streams, UDP datagrams per client flow.
//!
//! A port in `host` mode belongs to one container. A port in `ingress` mode is shared by
//! the tasks of one service on this node, connections going round-robin among them (the
//! node's part of Swarm's routing mesh; reaching tasks on other nodes needs the overlay
//! network).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::{PortSpec, Protocol, PublishMode};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Every port this node publishes.
#[derive(Clone, Default)]
pub struct PortTable(
    Arc<Mutex<HashMap<Key, Published>>>,
    Option<Arc<KernelPorts>>,
);

/// The kernel's half: connections from beyond the node are DNATed to the containers in
/// nftables (`nat prerouting`), so the container sees the client's own address; the
/// proxy serves the node itself (127.0.0.1) and its containers, which the kernel
/// cannot DNAT back to a bridge they sit on.
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
    backends: Vec<(String, SocketAddr)>,
    next: usize,
    stop: CancellationToken,
}

/// One container's share of the table; dropping it withdraws the container, and closes
/// ports no container serves any more.
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

/// The nft table of the published ports reached through `bridge`.
pub fn kernel_table(bridge: &str) -> String {
    super::vip::table_for("shoal_ports_", bridge)
}

/// The script that rewrites the table for `ports`: a packet to one of this node's own
/// addresses on a published port, not from the bridge, goes to one of its backends at
/// random.
fn render_kernel(bridge: &str, ports: &HashMap<Key, Published>) -> String {
    use std::fmt::Write as _;
    let t = kernel_table(bridge);
    let mut s = format!("add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n");
    let mut keys: Vec<&Key> = ports.keys().collect();
    keys.sort_by_key(|(p, proto)| (*p, proto.as_str()));
    let mut chains = String::new();
    let _ = writeln!(
        s,
        "  chain pre {{\n    type nat hook prerouting priority -100; policy accept;\n    iifname \"{bridge}\" return"
    );
    for (i, key) in keys.iter().enumerate() {
        let backends = &ports[*key].backends;
        if backends.is_empty() {
            continue;
        }
        let targets: Vec<String> = (0..backends.len())
            .map(|j| format!("{j} : jump p{i}_{j}"))
            .collect();
        let _ = writeln!(
            s,
            "    fib daddr type local {} dport {} numgen random mod {} vmap {{ {} }}",
            key.1.as_str(),
            key.0,
            backends.len(),
            targets.join(", ")
        );
        for (j, (_, to)) in backends.iter().enumerate() {
            let _ = writeln!(
                chains,
                "  chain p{i}_{j} {{\n    meta l4proto {} dnat to {to}\n  }}",
                key.1.as_str()
            );
        }
    }
    let _ = writeln!(s, "  }}\n{chains}}}");
    s
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
        let script = render_kernel(&kernel.bridge, table);
        let written = tokio::task::spawn_blocking(move || super::vip::nft(&script)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "published ports: could not write the kernel's table")
            }
            Err(e) => tracing::warn!(error = %e, "published ports: the nft task failed"),
        }
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
                (PublishMode::Ingress, Some(svc)) => format!("service/{svc}"),
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
                published.backends.retain(|(b, _)| b != id);
                published.backends.push(backend);
            } else {
                let stop = CancellationToken::new();
                let failed =
                    |e: std::io::Error| format!("publishing port {port}/{}: {e}", p.protocol.as_str());
                match p.protocol {
                    Protocol::Tcp => {
                        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                            .await
                            .map_err(failed)?;
                        tokio::spawn(serve(self.clone(), key, listener, stop.clone()));
                    }
                    Protocol::Udp => {
                        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
                            .await
                            .map_err(failed)?;
                        tokio::spawn(serve_udp(self.clone(), key, socket, stop.clone()));
                    }
                }
                table.insert(
                    key,
                    Published {
                        owner,
                        backends: vec![backend],
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

    async fn withdraw(&self, id: &str, ports: &[Key]) {
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
        if !ports.is_empty() {
            self.sync_kernel(&table).await;
        }
    }

    /// The next backend for a connection to `key`, round-robin.
    async fn pick(&self, key: Key) -> Option<SocketAddr> {
        let mut table = self.0.lock().await;
        let published = table.get_mut(&key)?;
        let n = published.backends.len();
        if n == 0 {
            return None;
        }
        published.next = (published.next + 1) % n;
        Some(published.backends[published.next].1)
    }
}


async fn serve(table: PortTable, key: Key, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (mut inbound, from) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(port = key.0, error = %e, "accept on a published port");
                    continue;
                }
            },
        };
        let Some(to) = table.pick(key).await else {
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

/// How long a UDP client's flow lasts without a datagram either way.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// UDP has no connections: each client address gets a flow of its own (a socket
/// connected to one backend), replies go back from the published port, and a flow
/// ends after [`UDP_IDLE`] without traffic.
async fn serve_udp(table: PortTable, key: Key, socket: UdpSocket, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(port = key.0, error = %e, "receive on a published udp port");
                    continue;
                }
            },
        };
        let existing = flows.lock().await.get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(to) = table.pick(key).await else {
                    continue;
                };
                let Ok(upstream) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
                    continue;
                };
                if upstream.connect(to).await.is_err() {
                    continue;
                }
                let upstream = Arc::new(upstream);
                flows.lock().await.insert(client, upstream.clone());
                tokio::spawn(relay_replies(
                    upstream.clone(),
                    socket.clone(),
                    client,
                    flows.clone(),
                    stop.clone(),
                ));
                upstream
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

async fn relay_replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)) => r,
        };
        match received {
            Ok(Ok(n)) => {
                let _ = socket.send_to(&buf[..n], client).await;
            }
            // Idle, or the backend is gone: the flow ends; the next datagram starts one.
            _ => break,
        }
    }
    flows.lock().await.remove(&client);
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
    async fn udp_datagrams_reach_the_container_and_replies_come_back() {
        let backend = UdpSocket::bind("127.0.0.1:0").await.expect("backend");
        let target = backend.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = backend.recv_from(&mut buf).await {
                let reply = [b"echo ", &buf[..n]].concat();
                let _ = backend.send_to(&reply, from).await;
            }
        });
        let probe = UdpSocket::bind("127.0.0.1:0").await.expect("probe");
        let published = probe.local_addr().expect("addr").port();
        drop(probe);
        let spec = PortSpec {
            protocol: Protocol::Udp,
            ..port(target, published, PublishMode::Host)
        };
        let table = PortTable::default();
        let lease = table
            .publish("a", None, &[spec], Ipv4Addr::LOCALHOST)
            .await
            .expect("publish udp");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client
            .connect(("127.0.0.1", published))
            .await
            .expect("connect");
        for word in ["one", "two"] {
            client.send(word.as_bytes()).await.expect("send");
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("a reply in time")
                .expect("recv");
            assert_eq!(&buf[..n], format!("echo {word}").as_bytes());
        }
        drop(lease);
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

#[cfg(test)]
mod kernel_tests {
    use super::*;

    #[test]
    fn each_published_port_goes_to_its_backends_unless_it_comes_from_the_bridge() {
        let mut ports = HashMap::new();
        let published = |backends: Vec<(String, SocketAddr)>| Published {
            owner: "service/web".into(),
            backends,
            next: 0,
            stop: CancellationToken::new(),
        };
        ports.insert(
            (8080, Protocol::Tcp),
            published(vec![
                ("a".into(), "172.30.0.2:80".parse().unwrap()),
                ("b".into(), "172.30.0.3:80".parse().unwrap()),
            ]),
        );
        let s = render_kernel("shoal0", &ports);
        assert!(s.contains("iifname \"shoal0\" return"), "{s}");
        assert!(
            s.contains("fib daddr type local tcp dport 8080 numgen random mod 2 vmap { 0 : jump p0_0, 1 : jump p0_1 }"),
            "{s}"
        );
        assert!(
            s.contains("chain p0_1 {\n    meta l4proto tcp dnat to 172.30.0.3:80\n  }"),
            "{s}"
        );
        let empty = render_kernel("shoal0", &HashMap::new());
        assert!(!empty.contains("dport"), "{empty}");
    }
}
