//! Log pipeline benchmark (first figures; hack/bench-logs.sh runs it). One process,
//! loopback, the same generated file for every figure:
//!
//! - raw_cat_to_tcp_mib_s: `cat FILE > /dev/tcp/...` (bash) into a TCP sink that
//!   counts bytes: the baseline;
//! - tail_to_tcp_mib_s: the tail input (no parser) → file buffer → forward output
//!   (acks) → a forward input that acks and keeps nothing: file bytes per second
//!   until every line was acknowledged;
//! - forward_in_mib_s: a client sending PackedForward messages (acks on) to a
//!   forward input that keeps nothing: message bytes per second.
//!
//! Not measured yet (the pipeline does not run as its own process, rsyslog is not
//! set up): task_logs_to_http_mib_s, rsyslog_tail_to_tcp_mib_s, pipeline_rss_mib.
//!
//! Usage: bench-logs [--mib N]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmpv::Value;
use shoal_logs::buffer::{FileBuffer, Limits};
use shoal_logs::forward::{encode_events, Mode};
use shoal_logs::retry::Policy;
use shoal_logs::route::Router;
use shoal_logs::tail::Tail;
use shoal_logs::{Event, EventTime, TagPattern};
use shoal_pipeline::output::{Output, Overflow};
use shoal_pipeline::sinks::Sink;
use shoal_pipeline::tail_in::TailIn;
use shoal_pipeline::{forward_in, Engine};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const LINE: &str = "2026-12-04T05:06:07.123456789Z INFO request served path=/api/v1/items status=200 took=3ms user=alice";

/// A forward input that acknowledges everything and keeps nothing; its engine
/// counts what it received.
async fn forward_blackhole(stop: &CancellationToken) -> (String, Arc<Engine>) {
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

async fn raw_cat(path: &std::path::Path, bytes: u64) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            g.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let t0 = Instant::now();
    let status = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "cat {} > /dev/tcp/127.0.0.1/{port}",
            path.display()
        ))
        .status()
        .await
        .expect("bash");
    assert!(status.success(), "cat into /dev/tcp");
    while got.load(Ordering::Relaxed) < bytes {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t0.elapsed().as_secs_f64()
}

async fn tail_to_forward(dir: &std::path::Path, lines: u64) -> f64 {
    let stop = CancellationToken::new();
    let (addr, receiver) = forward_blackhole(&stop).await;
    let limits = Limits {
        chunk_bytes: 4 << 20,
        chunk_age: Duration::from_millis(200),
        total_bytes: 1 << 30,
    };
    let (buffer, _) = FileBuffer::open(&dir.join("buffer"), limits).expect("buffer");
    let output = Output::new(
        "fwd",
        buffer,
        Overflow::Block,
        Policy::default(),
        Duration::from_millis(20),
        dir.join("dead"),
    );
    tokio::spawn(output.clone().run(Sink::forward(&addr), stop.clone()));
    let router = Router::new(vec![TagPattern::new("**").expect("p")], vec![vec![]]);
    let engine = Arc::new(Engine::new(Vec::new(), router, vec![output]));
    let t0 = Instant::now();
    let tail = Tail::open(
        &format!("{}/app.log", dir.join("logs").display()),
        &dir.join("positions"),
        64 << 10,
    )
    .expect("tail");
    let input = Arc::new(TailIn {
        tag: "app".into(),
        lines: shoal_pipeline::tail_in::Lines::Text,
        joining: None,
        events: Default::default(),
        parser: None,
        engine,
        poll: Duration::from_millis(10),
        unparsed: Default::default(),
    });
    tokio::spawn(input.run(tail, stop.clone()));
    while receiver.received.load(Ordering::Relaxed) < lines {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.cancel();
    secs
}

async fn forward_in(lines: u64) -> (f64, u64, u64) {
    let stop = CancellationToken::new();
    let (addr, receiver) = forward_blackhole(&stop).await;
    let events: Vec<Event> = (0..1000)
        .map(|i| Event {
            tag: "app".into(),
            time: EventTime {
                secs: 1_700_000_000,
                nanos: i,
            },
            record: Value::Map(vec![(Value::from("message"), Value::from(LINE))]),
        })
        .collect();
    let sink = Sink::forward(&addr);
    let per = encode_events(
        "app",
        &events,
        Mode::PackedForward,
        Some("AAAAAAAAAAAAAAAAAAAAAA=="),
    )
    .len() as u64;
    let rounds = lines / 1000;
    let t0 = Instant::now();
    for _ in 0..rounds {
        sink.send(&events).await.expect("acked");
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(receiver.received.load(Ordering::Relaxed), rounds * 1000);
    stop.cancel();
    (secs, rounds * per, rounds * 1000)
}

#[tokio::main]
async fn main() {
    let mut mib = 200u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let path = logs.join("app.log");
    let line_bytes = LINE.len() as u64 + 1;
    let lines = mib * (1 << 20) / line_bytes;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
        for _ in 0..lines {
            f.write_all(LINE.as_bytes()).expect("write");
            f.write_all(b"\n").expect("write");
        }
    }
    let bytes = lines * line_bytes;
    let mib_of = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!("{lines} lines, {:.0} MiB", mib_of(bytes));
    let raw = raw_cat(&path, bytes).await;
    eprintln!("tail -> forward out -> forward in (acks)");
    let tail = tail_to_forward(dir.path(), lines).await;
    eprintln!("forward in, PackedForward of 1,000 events, acks");
    let (fwd, fwd_bytes, fwd_events) = forward_in(lines).await;
    println!("raw_cat_to_tcp_mib_s: {:.1} MiB/s", mib_of(bytes) / raw);
    println!("tail_to_tcp_mib_s: {:.1} MiB/s", mib_of(bytes) / tail);
    println!(
        "tail_to_tcp_events_per_s: {:.0} events/s",
        lines as f64 / tail
    );
    println!("forward_in_mib_s: {:.1} MiB/s", mib_of(fwd_bytes) / fwd);
    println!(
        "forward_in_events_per_s: {:.0} events/s",
        fwd_events as f64 / fwd
    );
}
