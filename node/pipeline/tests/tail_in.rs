//! The tail input end to end: JSON lines into a file output, a restart in the
//! middle, rotation by rename while the pipeline is down, and every line arrives
//! once.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_logs::buffer::{FileBuffer, Limits};
use shoal_logs::format::Format;
use shoal_logs::parse::Parser;
use shoal_logs::retry::Policy;
use shoal_logs::route::Router;
use shoal_logs::tail::Tail;
use shoal_logs::TagPattern;
use shoal_pipeline::output::{Output, Overflow};
use shoal_pipeline::sinks::Sink;
use shoal_pipeline::tail_in::TailIn;
use shoal_pipeline::Engine;
use tokio_util::sync::CancellationToken;

fn write_lines(path: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log");
    for i in from..to {
        writeln!(f, "{{\"n\":{i},\"level\":\"info\"}}").expect("write");
    }
}

/// Runs a pipeline (tail → file) over `dir` until `n` records are in the output.
async fn run_until(dir: &Path, n: usize) {
    let limits = Limits {
        chunk_bytes: 64 << 10,
        chunk_age: Duration::from_millis(100),
        total_bytes: 16 << 20,
    };
    let (buffer, _) = FileBuffer::open(&dir.join("buffer"), limits).expect("buffer");
    let output = Output::new(
        "file",
        buffer,
        Overflow::Block,
        Policy::default(),
        Duration::from_millis(50),
        dir.join("dead"),
    );
    let out = dir.join("out.ndjson");
    let stop = CancellationToken::new();
    tokio::spawn(output.clone().run(
        Sink::File {
            path: out.clone(),
            format: Format::Json,
        },
        stop.clone(),
    ));
    let router = Router::new(vec![TagPattern::new("app").expect("p")], vec![vec![]]);
    let engine = Arc::new(Engine::new(Vec::new(), router, vec![output]));
    let glob = format!("{}/app.log", dir.join("logs").display());
    let tail = Tail::open(&glob, &dir.join("positions"), 16 << 10).expect("tail");
    let input = Arc::new(TailIn {
        tag: "app".into(),
        lines: shoal_pipeline::tail_in::Lines::Text,
        joining: None,
        events: Default::default(),
        parser: Some(Parser::Json),
        engine,
        poll: Duration::from_millis(20),
        unparsed: Default::default(),
    });
    tokio::spawn(input.run(tail, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if have >= n {
            break;
        }
        assert!(Instant::now() < deadline, "{have} of {n} records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a wrong extra line the time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_across_a_restart_and_a_rotation_arrive_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let log = logs.join("app.log");
    write_lines(&log, 0, 500);
    run_until(dir.path(), 500).await;
    // While the pipeline is down: more lines, a rotation, lines in the new file.
    write_lines(&log, 500, 1000);
    std::fs::rename(&log, logs.join("app.log.1")).expect("rotate");
    write_lines(&log, 1000, 1200);
    run_until(dir.path(), 1200).await;
    let text = std::fs::read_to_string(dir.path().join("out.ndjson")).expect("out");
    let mut seen: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["n"]
                .as_u64()
                .expect("n")
        })
        .collect();
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(total, 1200, "no line twice");
    assert_eq!(seen, (0..1200).collect::<Vec<_>>(), "none missing");
}
