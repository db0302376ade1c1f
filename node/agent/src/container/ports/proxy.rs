//! The agent's half of published ports, docker-proxy's way: for the node itself
//! (127.0.0.1:PORT) and its own containers, which the kernel's DNAT cannot serve. TCP
//! connections are relayed as streams, UDP datagrams per client flow.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Key, PortTable};

pub(super) async fn serve(
    table: PortTable,
    key: Key,
    listener: TcpListener,
    stop: CancellationToken,
) {
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
pub(super) async fn serve_udp(
    table: PortTable,
    key: Key,
    socket: UdpSocket,
    stop: CancellationToken,
) {
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
