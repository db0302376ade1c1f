//! The forward output against a forward input (two pipelines, as a node shipping to
//! an aggregator): every event arrives and counts as delivered only once acked; a
//! peer that never acks is a failure to retry, not a delivery.

use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use shoal_logs::buffer::{FileBuffer, Limits};
use shoal_logs::format::Format;
use shoal_logs::retry::Policy;
use shoal_logs::route::Router;
use shoal_logs::{Event, EventTime, TagPattern};
use shoal_pipeline::output::{Output, Overflow};
use shoal_pipeline::sinks::Sink;
use shoal_pipeline::{forward_in, Engine};
use tokio_util::sync::CancellationToken;

fn events(tag: &str, n: u32) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            tag: tag.into(),
            time: EventTime {
                secs: 1_700_000_000,
                nanos: i,
            },
            record: Value::Map(vec![(Value::from("n"), Value::from(i))]),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_by_forward_arrive_acked_and_an_unacking_peer_is_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        chunk_bytes: 1 << 20,
        chunk_age: Duration::from_millis(50),
        total_bytes: 16 << 20,
    };
    // The receiving pipeline: forward in → file.
    let (buffer, _) = FileBuffer::open(&dir.path().join("buffer"), limits).expect("buffer");
    let output = Output::new(
        "file",
        buffer,
        Overflow::Block,
        Policy::default(),
        Duration::from_millis(50),
        dir.path().join("dead"),
    );
    let out = dir.path().join("out.ndjson");
    let stop = CancellationToken::new();
    tokio::spawn(output.clone().run(
        Sink::File {
            path: out.clone(),
            format: Format::Json,
        },
        stop.clone(),
    ));
    let router = Router::new(vec![TagPattern::new("**").expect("p")], vec![vec![]]);
    let engine = Arc::new(Engine::new(Vec::new(), router, vec![output]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(forward_in::serve(
        listener,
        engine.clone(),
        16 << 20,
        Default::default(),
        stop.clone(),
    ));

    let sink = Sink::forward(&addr);
    let mut sent = events("app.a", 300);
    sent.extend(events("app.b", 200));
    sink.send(&sent).await.expect("acked");
    sink.send(&events("app.c", 10))
        .await
        .expect("the same connection again");
    assert_eq!(
        engine.received.load(std::sync::atomic::Ordering::Relaxed),
        510,
        "durable before acked"
    );

    // A peer that takes the connection and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let quiet = Sink::Forward {
        addr: silent_addr,
        conn: Default::default(),
        ack_timeout: Duration::from_millis(300),
    };
    let err = quiet.send(&events("app.a", 1)).await.expect_err("no ack");
    assert!(err.retry && err.why.contains("no ack"), "{err:?}");
    stop.cancel();
}
