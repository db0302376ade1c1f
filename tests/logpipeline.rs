//! LogPipelines run by a real agent on real containers: a task's 100,000 numbered
//! lines reach an HTTP sink through a file buffer while the test stops the sink for
//! 30 s and `kill -9`s the agent (the process running the pipeline) mid-stream, and
//! every line arrives (duplicates counted, at least once is the promise); the status
//! and Events say what happened; a sink down past the retry limit gets its chunks
//! set aside in the secondary directory, counted.
//!
//! One registry, server and agent serve every scenario (`SHOAL_SCENARIO=NAME` runs
//! one).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use support::node::Node;
use support::*;

/// An HTTP endpoint that takes NDJSON posts and keeps each line's `log` field; it can
/// be stopped (connections refused) and started again on the same port.
struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start(port: u16, logs: Arc<Mutex<Vec<String>>>) -> Sink {
        let listener = (0..50)
            .find_map(|_| {
                TcpListener::bind(("127.0.0.1", port))
                    .map_err(|_| std::thread::sleep(Duration::from_millis(100)))
                    .ok()
            })
            .expect("the sink's port");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, logs2) = (stop.clone(), logs.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, &logs2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Sink {
            stop,
            thread: Some(thread),
        }
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shut();
    }
}

/// One request: its body's lines kept, 200 answered, the connection closed.
fn serve(stream: std::net::TcpStream, logs: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut got = Vec::new();
    for l in String::from_utf8_lossy(&body).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        got.push(v["log"].as_str().unwrap_or(l).to_string());
    }
    logs.lock().expect("logs").extend(got);
    let mut stream = stream;
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
}

#[test]
fn log_pipelines_ship_task_logs() {
    let mut node = Node::start("shoaltest2", "10.232.0.0/24");
    run_scenarios(
        &mut node,
        scenarios![
            every_line_arrives_through_a_sink_outage_and_an_agent_kill,
            a_sink_down_past_the_retry_limit_sets_chunks_aside,
        ],
    );
}

const LINES: u64 = 100_000;

/// The distinct numbers among `logs`, and how many lines came more than once.
fn tally(logs: &[String]) -> (BTreeMap<u64, u32>, u64) {
    let mut seen = BTreeMap::new();
    for l in logs {
        if let Ok(n) = l.trim().parse::<u64>() {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    let dups = seen.values().map(|c| u64::from(c - 1)).sum();
    (seen, dups)
}

fn pipeline_status(c: &Node, name: &str) -> serde_json::Value {
    json(c.server.shoal(&["get", "logpipeline", name, "-o", "json"]))
}

fn every_line_arrives_through_a_sink_outage_and_an_agent_kill(c: &mut Node) {
    let port = free_port();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut sink = Sink::start(port, logs.clone());
    // 100 bursts of 1,000 numbered lines, 0.2 s apart: about 20 s of output, in
    // json-file logs rotated at 1 MiB.
    apply(
        &c.server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: counter}}\nspec:\n  \
             image: {}\n  command: [sh, -c, 'for b in $(seq 0 99); do seq $((b*1000)) $((b*1000+999)); sleep 0.2; done; sleep 3600']\n  \
             logging: {{maxSize: 1m, maxFile: 3}}\n",
            c.image
        ),
    );
    apply(
        &c.server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: LogPipeline\nmetadata: {{name: ship}}\nspec:\n  \
             inputs: [{{name: apps, type: tasks, selector: {{service: counter}}}}]\n  \
             outputs:\n  - name: sink\n    type: http\n    url: http://127.0.0.1:{port}/ingest\n    \
             buffer: {{type: file, flushInterval: 200ms, retry: {{maxAttempts: 1000, base: 200ms, maxDelay: 2s}}}}\n"
        ),
    );
    wait("the first 10,000 lines at the sink", 60, || {
        tally(&logs.lock().expect("logs")).0.len() >= 10_000
    });
    // The sink goes away for 30 s; meanwhile the agent is killed and comes back.
    sink.shut();
    std::thread::sleep(Duration::from_secs(3));
    c.agent.kill_and_restart();
    wait("the pipeline to say its output is failing", 30, || {
        let p = pipeline_status(c, "ship");
        p["status"]["nodes"][0]["outputs"][0]["failing"].is_string()
    });
    std::thread::sleep(Duration::from_secs(24));
    let during = tally(&logs.lock().expect("logs")).0.len();
    let mut sink = Sink::start(port, logs.clone());
    wait("every line at the sink", 120, || {
        tally(&logs.lock().expect("logs")).0.len() as u64 >= LINES
    });
    let (seen, dups) = tally(&logs.lock().expect("logs"));
    let missing: Vec<u64> = (0..LINES)
        .filter(|n| !seen.contains_key(n))
        .take(10)
        .collect();
    eprintln!(
        "log pipeline: {} distinct of {LINES}, {dups} duplicate(s), {during} before the sink came back",
        seen.len()
    );
    assert!(missing.is_empty(), "missing lines, the first: {missing:?}");
    // At least once, not many times: a restart re-reads only what was not yet
    // durable, and a rotated file is not read again under its new name.
    assert!(dups < LINES / 20, "{dups} duplicates");

    // What users see: the pipeline running on the node, delivering again, and the
    // Events of the outage.
    wait("the pipeline ready again", 30, || {
        let p = pipeline_status(c, "ship");
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let table = ok(c.server.shoal(&["get", "logpipelines"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("ship"))
        .unwrap_or_default();
    assert!(row.contains(" 1/1 "), "NODES 1/1: {table}");
    let events = events_for(&c.server, "LogPipeline/ship");
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(
        reasons.contains(&"OutputFailing") && reasons.contains(&"OutputRecovered"),
        "{reasons:?}"
    );
    let described = ok(c.server.shoal(&["describe", "logpipeline", "ship"]));
    assert!(
        described.contains("node: node-1") && described.contains("name: sink"),
        "per node and per output: {described}"
    );
    sink.shut();
    ok(c.server.shoal(&["delete", "logpipeline", "ship"]));
    ok(c.server.shoal(&["delete", "service", "counter"]));
}

fn dead_letter_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn a_sink_down_past_the_retry_limit_sets_chunks_aside(c: &mut Node) {
    let closed = free_port();
    let dead = c.tmp.path().join("dead-letter");
    apply(
        &c.server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: talker}}\nspec:\n  \
             image: {}\n  command: [sh, -c, 'seq 1 50; sleep 3600']\n",
            c.image
        ),
    );
    apply(
        &c.server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: LogPipeline\nmetadata: {{name: doomed}}\nspec:\n  \
             inputs: [{{name: apps, type: tasks, selector: {{service: talker}}}}]\n  \
             outputs:\n  - name: nowhere\n    type: http\n    url: http://127.0.0.1:{closed}/\n    \
             buffer: {{flushInterval: 100ms, retry: {{maxAttempts: 2, base: 100ms, maxDelay: 200ms}}}}\n    \
             secondary: {{path: {}}}\n",
            dead.display()
        ),
    );
    wait("all 50 lines set aside, counted", 60, || {
        let p = pipeline_status(c, "doomed");
        p["status"]["nodes"][0]["setAside"].as_u64() == Some(50)
    });
    let files = dead_letter_files(&dead);
    assert!(!files.is_empty(), "chunks in {}", dead.display());
    let table = ok(c.server.shoal(&["get", "logpipelines"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("doomed"))
        .unwrap_or_default();
    assert!(row.contains(" 50 "), "SET ASIDE 50: {table}");
    ok(c.server.shoal(&["delete", "logpipeline", "doomed"]));
    ok(c.server.shoal(&["delete", "service", "talker"]));
}
