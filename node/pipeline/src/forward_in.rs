//! The forward input: Fluentd's protocol over TCP, for Docker's fluentd log driver,
//! fluent-logger libraries and Fluent Bit. A message's events are acknowledged
//! (`{"ack": chunk}`, when the client asked with a `chunk` option) only after the
//! engine has them durable in every output's buffer; a client that gets no ack
//! sends again, so nothing it was told is safe is ever lost. A connection that
//! sends something that is not the protocol is closed, with the reason logged. UDP
//! heartbeats on the same port are answered (`answer_heartbeats`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shoal_logs::forward;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// Serves `listener` until `shutdown`. `limit`: the largest message taken.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    limit: usize,
    events: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "forward input: accept");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let engine = engine.clone();
        let events = events.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection(stream, &engine, limit, &events) => {
                    if let Err(why) = result {
                        tracing::warn!(%peer, error = %why, "forward input: connection closed");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// Answers Fluentd's UDP heartbeats on the input's port (out_forward's
/// `heartbeat_type udp`): each datagram gets one zero byte back, as in_forward does.
pub async fn answer_heartbeats(socket: tokio::net::UdpSocket, shutdown: CancellationToken) {
    let mut buf = [0u8; 64];
    loop {
        let from = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.cancelled() => return,
        };
        if let Ok((_, peer)) = from {
            let _ = socket.send_to(&[0], peer).await;
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    engine: &Engine,
    limit: usize,
    events: &AtomicU64,
) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Some((msg, used)) =
            forward::decode(&buf[at..], limit).map_err(|e| e.to_string())?
        {
            at += used;
            let n = msg.events.len() as u64;
            engine.ingest(msg.events).await.map_err(|e| e.to_string())?;
            events.fetch_add(n, Ordering::Relaxed);
            if let Some(c) = msg.chunk {
                stream
                    .write_all(&forward::ack(&c))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        buf.drain(..at);
    }
}
