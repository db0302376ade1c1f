//! What the benchmark's pipelines send to, in the benchmark's own process: a TCP
//! sink that counts bytes and lines, a forward input that acks and keeps nothing,
//! and an HTTP endpoint that counts NDJSON lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shoal_logs::route::Router;
use shoal_pipeline::{forward_in, Engine};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Bytes and newlines received, over every connection.
#[derive(Default)]
pub struct Counted {
    pub bytes: AtomicU64,
    pub lines: AtomicU64,
}

fn count(c: &Counted, data: &[u8]) {
    c.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
    c.lines.fetch_add(lines, Ordering::Relaxed);
}

pub async fn tcp_counter() -> (u16, Arc<Counted>) {
    let listener = loopback().await;
    let port = listener.local_addr().expect("addr").port();
    let counted = Arc::new(Counted::default());
    let c = counted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    count(&c, &buf[..n]);
                }
            });
        }
    });
    (port, counted)
}

/// A forward input that acknowledges everything and keeps nothing; its engine
/// counts what it received.
pub async fn forward_blackhole(stop: &CancellationToken) -> (String, Arc<Engine>) {
    let engine = Arc::new(Engine::new(
        Vec::new(),
        Router::new(Vec::new(), Vec::new()),
        Vec::new(),
    ));
    let listener = loopback().await;
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(forward_in::serve(
        listener,
        engine.clone(),
        64 << 20,
        Default::default(),
        stop.clone(),
    ));
    (addr, engine)
}

/// An HTTP endpoint answering 200 to every POST, counting its bodies' lines.
pub async fn http_counter() -> (u16, Arc<Counted>) {
    let listener = loopback().await;
    let port = listener.local_addr().expect("addr").port();
    let counted = Arc::new(Counted::default());
    let c = counted.clone();
    let app = axum::Router::new()
        .fallback(axum::routing::post(
            move |body: axum::body::Bytes| async move {
                count(&c, &body);
                ""
            },
        ))
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, counted)
}

/// A forward receiver that acks each message and counts its entries without
/// decoding them: the peer's cost is not the pipeline's, as `cat` into a counting
/// socket is the baseline's. PackedForward only (what the forward output sends).
pub async fn forward_acker() -> (String, Arc<Counted>) {
    let listener = loopback().await;
    let addr = listener.local_addr().expect("addr").to_string();
    let counted = Arc::new(Counted::default());
    let c = counted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let _ = ack_all(s, &c).await;
            });
        }
    });
    (addr, counted)
}

async fn ack_all(mut s: tokio::net::TcpStream, c: &Counted) -> Option<()> {
    use shoal_logs::frame::value_len;
    use tokio::io::AsyncWriteExt;
    let mut buf: Vec<u8> = Vec::with_capacity(8 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return Some(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Some(len) = value_len(&buf[at..], 1 << 30).ok()? {
            let message = &buf[at..at + len];
            at += len;
            // [tag, bin(entries), {chunk}]
            let mut rest = &message[1..];
            let tag = rmp::decode::read_str_len(&mut rest).ok()? as usize;
            rest = &rest[tag..];
            let entries = rmp::decode::read_bin_len(&mut rest).ok()? as usize;
            let (mut packed, option) = rest.split_at(entries);
            let mut events = 0u64;
            while !packed.is_empty() {
                let l = value_len(packed, 1 << 30).ok()??;
                packed = &packed[l..];
                events += 1;
            }
            c.lines.fetch_add(events, Ordering::Relaxed);
            c.bytes.fetch_add(len as u64, Ordering::Relaxed);
            let option = rmpv::decode::read_value(&mut &option[..]).ok()?;
            let id = option
                .as_map()?
                .iter()
                .find(|(k, _)| k.as_str() == Some("chunk"))?
                .1
                .as_str()?
                .to_string();
            s.write_all(&shoal_logs::forward::ack(&id)).await.ok()?;
        }
        buf.drain(..at);
    }
}

/// A listener on a free loopback port.
pub async fn loopback() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}
