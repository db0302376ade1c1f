//! The HTTP input, as Fluentd's in_http: `POST /TAG` with a JSON object or array,
//! NDJSON or MessagePack. The answer is 200 only once the events are durable in
//! every output's buffer; a request that cannot be read gets 400 with the reason,
//! and a pipeline that cannot make them durable answers 503, so the client sends
//! again. Bodies are bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use shoal_logs::EventTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// The largest body taken.
pub const MAX_BODY: usize = 16 << 20;

struct Input {
    engine: Arc<Engine>,
    events: Arc<AtomicU64>,
}

/// Serves `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    events: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new()
        .fallback(axum::routing::post(take))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(Input { engine, events }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "http input stopped");
    }
}

async fn take(
    State(input): State<Arc<Input>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let events =
        match shoal_logs::http_in::events(uri.path(), content_type, &body, EventTime::now()) {
            Ok(e) => e,
            Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")),
        };
    let n = events.len() as u64;
    match input.engine.ingest(events).await {
        Ok(()) => {
            input.events.fetch_add(n, Ordering::Relaxed);
            (StatusCode::OK, String::new())
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}
