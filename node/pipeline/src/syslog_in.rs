//! The syslog input: RFC 5424 and RFC 3164 messages over UDP (one per datagram) and
//! TCP (octet counting or a newline after each, told per message), as rsyslog,
//! util-linux `logger` and network devices send them. Each message becomes an event
//! tagged `<tag>.<facility>.<severity>` (Fluentd's in_syslog) with the parsed fields;
//! a message that does not parse is kept as `{message: ...}` under
//! `<tag>.unparsed` and counted, never dropped. TCP senders are read no faster than
//! the engine makes their messages durable; UDP has no way to push back, as ever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rmpv::Value;
use shoal_logs::parse::{field, syslog};
use shoal_logs::{Event, EventTime};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// The largest message taken (RFC 5424 asks receivers for at least 2 KiB; rsyslog
/// defaults to 8 KiB).
pub const MAX_MESSAGE: usize = 64 << 10;

pub struct SyslogIn {
    pub tag: String,
    pub engine: Arc<Engine>,
    /// Messages that did not parse (kept as they came).
    pub unparsed: Arc<AtomicU64>,
    /// Messages taken.
    pub events: Arc<AtomicU64>,
}

impl SyslogIn {
    fn event(&self, text: &str) -> Event {
        self.events.fetch_add(1, Ordering::Relaxed);
        let now = EventTime::now();
        match syslog::parse(text) {
            Ok(p) => {
                let facility = field(&p.record, "facility").unwrap_or("user").to_string();
                let severity = field(&p.record, "severity").unwrap_or("notice").to_string();
                Event {
                    tag: format!("{}.{facility}.{severity}", self.tag),
                    time: p.time.unwrap_or(now),
                    record: p.record,
                }
            }
            Err(why) => {
                self.unparsed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %why, "syslog input: kept a message that does not parse");
                Event {
                    tag: format!("{}.unparsed", self.tag),
                    time: now,
                    record: Value::Map(vec![(Value::from("message"), Value::from(text))]),
                }
            }
        }
    }

    /// Serves UDP datagrams until `shutdown`.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket, shutdown: CancellationToken) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let n = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, _)) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "syslog input: receive");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let event = self.event(text.trim_end_matches(['\n', '\0']));
            if let Err(e) = self.engine.ingest(vec![event]).await {
                tracing::error!(error = %e, "syslog input");
            }
        }
    }

    /// Serves TCP connections until `shutdown`.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "syslog input: accept");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    r = me.connection(stream) => if let Err(why) = r {
                        tracing::warn!(%peer, error = %why, "syslog input: connection closed");
                    },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    async fn connection(&self, mut stream: TcpStream) -> Result<(), String> {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                // A last message without its newline still counts.
                let rest = String::from_utf8_lossy(&buf).trim().to_string();
                if !rest.is_empty() {
                    let event = self.event(&rest);
                    self.engine
                        .ingest(vec![event])
                        .await
                        .map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let (messages, used) = syslog::frames(&buf, MAX_MESSAGE).map_err(|e| e.to_string())?;
            buf.drain(..used);
            let events: Vec<Event> = messages.iter().map(|(_, m)| self.event(m)).collect();
            if !events.is_empty() {
                self.engine
                    .ingest(events)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}
