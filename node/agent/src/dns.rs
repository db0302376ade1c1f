//! The containers' DNS resolver (Docker's embedded DNS server): one per node, on the
//! node bridge's gateway, port 53, UDP and TCP; every container's resolv.conf points
//! at it. A name is answered from the networks the asking container joins (known by
//! its source address on the node bridge), with the records the API server sends in
//! each peer set: `<service>`, `tasks.<service>`, `<task>` and aliases. Anything else
//! goes to the node's upstream resolvers, as asked.
//!
//! Answers carry TTL 0: a task that goes leaves DNS when the next peer set comes,
//! and no client keeps it longer.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use shoal_wire::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The cluster's own domain: containers search it (so a resolver that tries search
/// domains first, or derives one from a dotted hostname such as `web.1`, still asks
/// for a cluster name), and nothing under it is ever forwarded.
pub const DOMAIN: &str = "shoal.internal";

/// How long an upstream resolver has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest message over UDP we read (EDNS allows up to 64 KiB; most stay small).
const UDP_MAX: usize = 4096;

#[derive(Default)]
struct Records {
    /// network → lowercase name (no final dot) → addresses
    names: HashMap<String, BTreeMap<String, Vec<Ipv4Addr>>>,
    /// a container's node-bridge address → what it may ask for
    askers: HashMap<Ipv4Addr, Asker>,
}

/// A container the resolver answers: its networks, and its links (alias → task).
#[derive(Default, Clone, Debug)]
pub struct Asker {
    pub networks: Vec<String>,
    pub links: HashMap<String, String>,
}

pub struct Dns {
    records: RwLock<Records>,
    upstreams: Vec<SocketAddr>,
    /// Who may ask (network address, mask): the node bridge's containers, so the
    /// resolver is never an open one for whoever can route to the gateway.
    clients: (u32, u32),
}

/// What a query gets: local records, a local "no such name", or the upstream's word.
#[derive(Debug, PartialEq)]
enum Answer {
    Local(Vec<Ipv4Addr>),
    NoSuchName,
    Upstream,
}

/// The nameservers of a resolv.conf, on port 53.
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Dns {
    /// A resolver for the containers in `clients` (`base/prefix`, the node bridge's
    /// subnet); anyone else gets no answer.
    pub fn new(upstreams: Vec<SocketAddr>, clients: (Ipv4Addr, u8)) -> Arc<Self> {
        let mask = u32::MAX.checked_shl(32 - u32::from(clients.1)).unwrap_or(0);
        Arc::new(Dns {
            records: RwLock::default(),
            upstreams,
            clients: (u32::from(clients.0) & mask, mask),
        })
    }

    fn may_ask(&self, asker: Ipv4Addr) -> bool {
        u32::from(asker) & self.clients.1 == self.clients.0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Records> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The names of the peer set's networks, replacing what was known.
    pub fn set_names(&self, set: &pb::PeerSet) {
        let names = set
            .networks
            .iter()
            .map(|n| {
                let names = n
                    .names
                    .iter()
                    .map(|d| {
                        let ips = d.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                        (d.name.to_ascii_lowercase(), ips)
                    })
                    .collect();
                (n.network.clone(), names)
            })
            .collect();
        self.write().names = names;
    }

    /// The container at `asker` on the node bridge joins these networks, with links.
    pub fn register(&self, asker: Ipv4Addr, who: Asker) {
        self.write().askers.insert(asker, who);
    }

    pub fn unregister(&self, asker: Ipv4Addr) {
        self.write().askers.remove(&asker);
    }

    fn lookup(&self, asker: Ipv4Addr, name: &str) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let (name, in_domain) = match name.strip_suffix(DOMAIN) {
            Some(rest) if rest.is_empty() || rest.ends_with('.') => {
                (rest.trim_end_matches('.').to_string(), true)
            }
            _ => (name, false),
        };
        let records = self.read();
        let Some(who) = records.askers.get(&asker) else {
            return if in_domain {
                Answer::NoSuchName
            } else {
                Answer::Upstream
            };
        };
        let networks = &who.networks;
        let name = who.links.get(&name).cloned().unwrap_or(name);
        let mut found: Option<Vec<Ipv4Addr>> = None;
        for net in networks {
            if let Some(ips) = records.names.get(net).and_then(|n| n.get(&name)) {
                let all = found.get_or_insert_with(Vec::new);
                all.extend(
                    ips.iter()
                        .filter(|ip| !all.contains(ip))
                        .collect::<Vec<_>>(),
                );
            }
        }
        // A name in the cluster's style with nothing behind it (every task of the
        // service stopped) is still ours: an empty answer, not the upstream's.
        match found {
            Some(ips) => Answer::Local(ips),
            None if self.is_ours(&records, networks, &name) => Answer::Local(Vec::new()),
            None if in_domain => Answer::NoSuchName,
            None => Answer::Upstream,
        }
    }

    /// `tasks.<x>` where `<x>` is a name on one of the asker's networks.
    fn is_ours(&self, records: &Records, networks: &[String], name: &str) -> bool {
        name.strip_prefix("tasks.").is_some_and(|rest| {
            networks
                .iter()
                .any(|n| records.names.get(n).is_some_and(|m| m.contains_key(rest)))
        })
    }

    /// The reply to `query` from `asker`: answered here, or by an upstream resolver.
    pub async fn reply(&self, asker: Ipv4Addr, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        if !self.may_ask(asker) {
            return None;
        }
        let msg = match Message::from_vec(query) {
            Ok(m) => m,
            // Not even a header: nothing to answer.
            Err(_) if query.len() < 12 => return None,
            Err(_) => {
                let id = u16::from_be_bytes([query[0], query[1]]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        if msg.metadata.message_type != MessageType::Query || msg.queries.len() != 1 {
            return self.error(&msg, ResponseCode::NotImp);
        }
        let q = &msg.queries[0];
        let name = q.name().to_ascii();
        match self.lookup(asker, &name) {
            Answer::Local(ips) => {
                let mut out = Message::response(msg.metadata.id, OpCode::Query);
                out.metadata.recursion_desired = msg.metadata.recursion_desired;
                out.metadata.recursion_available = true;
                out.metadata.authoritative = true;
                out.add_query(q.clone());
                if q.query_type() == RecordType::A || q.query_type() == RecordType::ANY {
                    for ip in ips {
                        out.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(ip))));
                    }
                }
                out.to_vec().ok()
            }
            Answer::NoSuchName => {
                let mut out =
                    Message::error_msg(msg.metadata.id, OpCode::Query, ResponseCode::NXDomain);
                out.metadata.recursion_desired = msg.metadata.recursion_desired;
                out.metadata.recursion_available = true;
                out.metadata.authoritative = true;
                out.add_query(q.clone());
                out.to_vec().ok()
            }
            Answer::Upstream => match self.forward(query, tcp).await {
                Some(r) => Some(r),
                None => self.error(&msg, ResponseCode::ServFail),
            },
        }
    }

    fn error(&self, msg: &Message, code: ResponseCode) -> Option<Vec<u8>> {
        let mut out = Message::error_msg(msg.metadata.id, msg.metadata.op_code, code);
        out.add_queries(msg.queries.clone());
        out.to_vec().ok()
    }

    /// The first upstream's answer to `query`, passed on as it came.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let asked = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
                if tcp {
                    let mut s = TcpStream::connect(upstream).await.ok()?;
                    s.write_all(&(query.len() as u16).to_be_bytes())
                        .await
                        .ok()?;
                    s.write_all(query).await.ok()?;
                    read_framed(&mut s).await
                } else {
                    let bind: SocketAddr = if upstream.is_ipv4() {
                        "0.0.0.0:0".parse().ok()?
                    } else {
                        "[::]:0".parse().ok()?
                    };
                    let s = UdpSocket::bind(bind).await.ok()?;
                    // Connected: a resolver that is not there fails at once (ICMP).
                    s.connect(upstream).await.ok()?;
                    s.send(query).await.ok()?;
                    let mut buf = vec![0u8; UDP_MAX];
                    let n = s.recv(&mut buf).await.ok()?;
                    buf.truncate(n);
                    Some(buf)
                }
            })
            .await;
            if let Ok(Some(reply)) = asked {
                return Some(reply);
            }
            tracing::debug!(%upstream, "upstream resolver did not answer");
        }
        None
    }

    /// Listens on UDP and TCP at `addr`; the future answers there until dropped.
    pub async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
    ) -> std::io::Result<impl std::future::Future<Output = ()>> {
        let udp = Arc::new(UdpSocket::bind(addr).await?);
        let tcp = TcpListener::bind(addr).await?;
        Ok(self.answer(udp, tcp))
    }

    async fn answer(self: Arc<Self>, udp: Arc<UdpSocket>, tcp: TcpListener) {
        let dns = self.clone();
        let udp_loop = async move {
            let mut buf = vec![0u8; UDP_MAX];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let SocketAddr::V4(from4) = from else {
                    continue;
                };
                let (dns, udp, query) = (dns.clone(), udp.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    if let Some(reply) = dns.reply(*from4.ip(), &query, false).await {
                        let _ = udp.send_to(&reply, from).await;
                    }
                });
            }
        };
        let tcp_loop = async move {
            loop {
                let Ok((mut s, from)) = tcp.accept().await else {
                    continue;
                };
                let SocketAddr::V4(from4) = from else {
                    continue;
                };
                let dns = self.clone();
                tokio::spawn(async move {
                    while let Ok(Some(query)) =
                        tokio::time::timeout(Duration::from_secs(10), read_framed(&mut s)).await
                    {
                        let Some(reply) = dns.reply(*from4.ip(), &query, true).await else {
                            return;
                        };
                        let len = (reply.len() as u16).to_be_bytes();
                        if s.write_all(&len).await.is_err() || s.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        };
        tokio::join!(udp_loop, tcp_loop);
    }
}

/// One length-prefixed DNS message from a TCP stream.
async fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
