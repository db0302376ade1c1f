//! A real Fluentd client (PyPI's fluent-logger, acks on) sends to the forward input;
//! an HTTP sink that fails for a while still gets every record, once the pipeline
//! has retried; a sink that refuses for good gets nothing and the chunks wait in
//! the dead-letter directory, counted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_logs::buffer::{FileBuffer, Limits};
use shoal_logs::format::Format;
use shoal_logs::retry::Policy;
use shoal_logs::route::Router;
use shoal_logs::TagPattern;
use shoal_pipeline::output::{Output, Overflow};
use shoal_pipeline::sinks::Sink;
use shoal_pipeline::{forward_in, Engine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// PyPI's fluent-logger, installed once into the build directory.
fn python_path() -> PathBuf {
    static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(install_fluent_logger).clone()
}

fn install_fluent_logger() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pylib");
    if !dir.join("fluent").is_dir() {
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&dir)
            .arg("fluent-logger==0.11.1")
            .output()
            .expect("python3 -m pip");
        assert!(
            out.status.success(),
            "pip install fluent-logger: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// An HTTP endpoint that keeps every NDJSON line it accepts, answering `status`.
#[derive(Clone, Default)]
struct HttpSink {
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicU16>,
    up: Arc<AtomicBool>,
}

impl HttpSink {
    async fn start(status: u16) -> (HttpSink, String) {
        let sink = HttpSink::default();
        sink.status.store(status, Ordering::SeqCst);
        sink.up.store(true, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/ingest", listener.local_addr().expect("addr"));
        let s = sink.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    loop {
                        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                        if let Some(end) = head_end {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                let body = buf[end + 4..end + 4 + len].to_vec();
                                buf.drain(..end + 4 + len);
                                s.requests.fetch_add(1, Ordering::SeqCst);
                                let status = s.status.load(Ordering::SeqCst);
                                if status == 200 {
                                    let mut lines = s.lines.lock().expect("lines");
                                    for l in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                                        lines.push(serde_json::from_slice(l).expect("NDJSON"));
                                    }
                                }
                                let answer =
                                    format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                                if stream.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (sink, url)
    }
}

struct Pipeline {
    output: Arc<Output>,
    port: u16,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    dead: PathBuf,
}

async fn pipeline(url: &str, max_attempts: u32) -> Pipeline {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        chunk_bytes: 256 << 10,
        chunk_age: Duration::from_millis(200),
        total_bytes: 64 << 20,
    };
    let (buffer, _) = FileBuffer::open(&dir.path().join("buffer"), limits).expect("buffer");
    let dead = dir.path().join("dead-letter");
    let output = Output::new(
        "sink",
        buffer,
        Overflow::Block,
        Policy {
            max_attempts,
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        },
        Duration::from_millis(100),
        dead.clone(),
    );
    let router = Router::new(
        vec![TagPattern::new("app.**").expect("pattern")],
        vec![vec![]],
    );
    let engine = Arc::new(Engine::new(Vec::new(), router, vec![output.clone()]));
    let stop = CancellationToken::new();
    tokio::spawn(
        output
            .clone()
            .run(Sink::http(url, Format::Json), stop.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(forward_in::serve(
        listener,
        engine,
        16 << 20,
        Default::default(),
        stop.clone(),
    ));
    Pipeline {
        output,
        port,
        stop,
        _dir: dir,
        dead,
    }
}

/// Sends `n` records tagged `app.web` with fluent-logger, acks required.
async fn send(port: u16, n: usize) {
    let script = format!(
        "import sys\n\
         from fluent import sender\n\
         s = sender.FluentSender('app', host='127.0.0.1', port={port}, nanosecond_precision=True, require_ack_response=True, timeout=10)\n\
         for i in range({n}):\n\
         \x20   if not s.emit('web', {{'n': i, 'nested': {{'list': [i, 'x'], 'ok': True}}}}):\n\
         \x20       sys.exit('emit %d failed: %r' % (i, s.last_error))\n\
         s.close()\n"
    );
    let path = python_path();
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .env("PYTHONPATH", path)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "fluent-logger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_arrives_through_a_sink_that_fails_for_a_while() {
    let (sink, url) = HttpSink::start(503).await;
    let p = pipeline(&url, 1000).await;
    const N: usize = 2000;
    send(p.port, N).await;
    // Everything was acknowledged while the sink refused: it is all in the buffer.
    assert!(sink.lines.lock().expect("lines").is_empty());
    wait_for("the pipeline to retry", 10, || {
        sink.requests.load(Ordering::SeqCst) >= 2
    })
    .await;
    sink.status.store(200, Ordering::SeqCst);
    wait_for("every record", 30, || {
        sink.lines.lock().expect("lines").len() >= N
    })
    .await;
    let lines = sink.lines.lock().expect("lines").clone();
    let mut seen: Vec<u64> = lines.iter().filter_map(|l| l["n"].as_u64()).collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..N as u64).collect::<Vec<_>>(),
        "each once, none missing"
    );
    assert_eq!(
        lines[0]["nested"],
        serde_json::json!({"list": [0, "x"], "ok": true})
    );
    assert!(p.output.counters.retried.load(Ordering::Relaxed) >= 1);
    // The sink has the last lines a moment before the output reads its answer.
    wait_for("every record counted delivered", 10, || {
        p.output.counters.delivered.load(Ordering::Relaxed) == N as u64
    })
    .await;
    let changes = p.output.take_changes();
    assert_eq!(
        changes.len(),
        2,
        "failing once, recovered once: {changes:?}"
    );
    p.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_refuses_for_good_leaves_the_chunks_in_the_dead_letter_directory() {
    let (sink, url) = HttpSink::start(400).await;
    let p = pipeline(&url, 3).await;
    send(p.port, 100).await;
    let output = p.output.clone();
    wait_for("the chunks set aside", 20, || {
        output.counters.set_aside.load(Ordering::Relaxed) == 100
    })
    .await;
    assert!(sink.lines.lock().expect("lines").is_empty());
    let files = std::fs::read_dir(&p.dead).expect("dead letter").count();
    assert!(files >= 1, "chunk files in {}", p.dead.display());
    assert_eq!(p.output.buffered(), 0);
    p.stop.cancel();
}
