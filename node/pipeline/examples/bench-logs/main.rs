//! Log pipeline benchmark (hack/bench-logs.sh runs it). Loopback, the same generated
//! lines for every figure; each pipeline under test runs from a LogPipeline manifest
//! in a process of its own (`child.rs`):
//!
//! - raw_cat_to_tcp_mib_s: `cat FILE > /dev/tcp/...` (bash) into a TCP sink that
//!   counts bytes: the baseline;
//! - tail_to_tcp_mib_s: a tail input (no parser) → file buffer → forward output
//!   (acks) → a receiver that acks each message and counts its entries without
//!   decoding them (`sinks::forward_acker`): file bytes per second until every line
//!   was acknowledged;
//! - rsyslog_tail_to_tcp_mib_s: rsyslog's imfile → omfwd (TCP) on the same file, into
//!   a TCP sink counting lines (`rsyslog.rs`);
//! - task_logs_to_http_mib_s: a tasks input on a json-file log of the same lines →
//!   file buffer → HTTP output (NDJSON) → an endpoint counting lines: json-file bytes
//!   per second;
//! - forward_in_mib_s: a client sending PackedForward messages (acks on) to a
//!   forward input that keeps nothing: message bytes per second;
//! - pipeline_rss_mib: the larger peak RSS of the two pipeline processes.
//!
//! Usage: bench-logs [--mib N]

mod child;
mod rsyslog;
mod sinks;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use child::Pipeline;
use rmpv::Value;
use shoal_logs::forward::{encode_events, Mode};
use shoal_logs::{Event, EventTime};
use shoal_pipeline::sinks::Sink;
use sinks::{forward_acker, forward_blackhole, http_counter};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const LINE: &str = "2026-12-04T05:06:07.123456789Z INFO request served path=/api/v1/items status=200 took=3ms user=alice";

async fn raw_cat(path: &std::path::Path, bytes: u64) -> f64 {
    let listener = sinks::loopback().await;
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

/// Seconds until `lines` lines of `logs/app.log` went through a tail → forward
/// pipeline; and its peak RSS.
async fn tail_to_forward(dir: &Path, lines: u64) -> (f64, f64) {
    let (addr, receiver) = forward_acker().await;
    let manifest = format!(
        "apiVersion: shoal.dev/v1\nkind: LogPipeline\nmetadata: {{name: bench}}\nspec:\n  \
         inputs: [{{name: app, type: tail, path: {}/logs/app.log, tag: app}}]\n  \
         outputs: [{{name: fwd, type: forward, address: \"{addr}\", buffer: {{flushInterval: 50ms, chunkLimit: 4m, totalLimit: 1g}}}}]\n",
        dir.display()
    );
    let t0 = Instant::now();
    let pipeline = Pipeline::spawn(dir, "tail", &manifest, None);
    while receiver.lines.load(Ordering::Relaxed) < lines {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    (secs, pipeline.peak_rss_mib())
}

/// Seconds until every line of a json-file log `task/container.log` went through a
/// tasks → HTTP pipeline; and its peak RSS.
async fn task_logs_to_http(dir: &Path, lines: u64) -> (f64, f64) {
    let (port, counted) = http_counter().await;
    let manifest = format!(
        "apiVersion: shoal.dev/v1\nkind: LogPipeline\nmetadata: {{name: bench}}\nspec:\n  \
         inputs: [{{name: tasks, type: tasks}}]\n  \
         outputs: [{{name: web, type: http, url: \"http://127.0.0.1:{port}/ingest\", buffer: {{flushInterval: 50ms, chunkLimit: 4m, totalLimit: 1g}}}}]\n"
    );
    let t0 = Instant::now();
    let pipeline = Pipeline::spawn(dir, "tasks", &manifest, Some(&dir.join("task")));
    while counted.lines.load(Ordering::Relaxed) < lines {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    (secs, pipeline.peak_rss_mib())
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
    let (mut manifest, mut state, mut task_dir) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--pipeline" => manifest = args.next().map(PathBuf::from),
            "--state" => state = args.next().map(PathBuf::from),
            "--task-dir" => task_dir = args.next().map(PathBuf::from),
            other => panic!("unknown flag {other}"),
        }
    }
    if let (Some(m), Some(s)) = (&manifest, &state) {
        return child::run(m, s, task_dir).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let task = dir.path().join("task");
    std::fs::create_dir_all(&logs).expect("logs");
    std::fs::create_dir_all(&task).expect("task");
    let path = logs.join("app.log");
    let line_bytes = LINE.len() as u64 + 1;
    let lines = mib * (1 << 20) / line_bytes;
    let json_line = format!(
        "{}\n",
        serde_json::json!({"log": format!("{LINE}\n"), "stream": "stdout", "time": "2026-12-04T05:06:07.123456789Z"})
    );
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
        let mut j = std::io::BufWriter::new(
            std::fs::File::create(task.join("container.log")).expect("json-file"),
        );
        for _ in 0..lines {
            f.write_all(LINE.as_bytes()).expect("write");
            f.write_all(b"\n").expect("write");
            j.write_all(json_line.as_bytes()).expect("write");
        }
    }
    let bytes = lines * line_bytes;
    let json_bytes = lines * json_line.len() as u64;
    let mib_of = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "{lines} lines, {:.0} MiB ({:.0} MiB as a json-file log)",
        mib_of(bytes),
        mib_of(json_bytes)
    );
    let raw = raw_cat(&path, bytes).await;
    eprintln!("tail -> forward out -> forward in (acks)");
    let (tail, tail_rss) = tail_to_forward(dir.path(), lines).await;
    eprintln!("rsyslog: imfile -> omfwd (tcp)");
    let rsyslog = rsyslog::tail_to_tcp(dir.path(), &path, lines).await;
    eprintln!("task logs (json-file) -> http");
    let (http, http_rss) = task_logs_to_http(dir.path(), lines).await;
    eprintln!("forward in, PackedForward of 1,000 events, acks");
    let (fwd, fwd_bytes, fwd_events) = forward_in(lines).await;
    println!("raw_cat_to_tcp_mib_s: {:.1} MiB/s", mib_of(bytes) / raw);
    println!("tail_to_tcp_mib_s: {:.1} MiB/s", mib_of(bytes) / tail);
    println!(
        "tail_to_tcp_events_per_s: {:.0} events/s",
        lines as f64 / tail
    );
    match rsyslog {
        Some(secs) => println!(
            "rsyslog_tail_to_tcp_mib_s: {:.1} MiB/s",
            mib_of(bytes) / secs
        ),
        None => eprintln!("rsyslog_tail_to_tcp_mib_s: not measured (no rsyslogd)"),
    }
    println!(
        "task_logs_to_http_mib_s: {:.1} MiB/s",
        mib_of(json_bytes) / http
    );
    println!(
        "task_logs_to_http_events_per_s: {:.0} events/s",
        lines as f64 / http
    );
    println!("forward_in_mib_s: {:.1} MiB/s", mib_of(fwd_bytes) / fwd);
    println!(
        "forward_in_events_per_s: {:.0} events/s",
        fwd_events as f64 / fwd
    );
    println!("pipeline_rss_mib: {:.1} MiB", tail_rss.max(http_rss));
}
