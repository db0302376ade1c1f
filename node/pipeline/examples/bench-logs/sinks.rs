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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
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
