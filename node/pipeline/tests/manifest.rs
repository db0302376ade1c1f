//! A LogPipeline manifest, checked as `shoal apply` checks it, started on a node: curl posts
//! to its HTTP input and a task's json-file log feeds its tasks input; each event
//! reaches the outputs its tag routes to (`*`, `**`, `{a,b}`, first match wins,
//! `copy` to two), the task's lines parsed and enriched from the node and the tag,
//! and the status counts what happened.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_api::validate::Problems;
use shoal_api::LogPipeline;
use shoal_pipeline::build::{start, Place};
use shoal_pipeline::tasks_in::TaskLog;

fn manifest(dir: &Path, port: u16) -> LogPipeline {
    let d = dir.display();
    let text = format!(
        r#"apiVersion: shoal.dev/v1
kind: LogPipeline
metadata: {{name: routes}}
spec:
  inputs:
    - {{name: web, type: http, listen: "127.0.0.1:{port}"}}
    - {{name: apps, type: tasks, selector: {{service: api}}, parser: json}}
  filters:
    - {{match: "task.**", type: modify, add: {{node: "{{node}}", service: "{{tag_parts[1]}}"}}, remove: [stream]}}
  outputs:
    - {{name: both, match: "audit.**", type: copy, to: [api, rest]}}
    - {{name: api, match: "task.{{api,web}}.**", type: file, path: "{d}/api.ndjson", buffer: {{flushInterval: 100ms}}}}
    - {{name: one, match: "app.*", type: file, path: "{d}/one.ndjson", buffer: {{flushInterval: 100ms}}}}
    - {{name: rest, match: "**", type: file, path: "{d}/rest.ndjson", buffer: {{flushInterval: 100ms}}}}
"#
    );
    // As `shoal apply` checks it (the store refuses pipelines until nodes run them).
    let pipeline: LogPipeline = serde_yaml::from_str(&text).expect("a LogPipeline");
    let mut problems = Problems::default();
    pipeline.spec.check(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    pipeline
}

/// Node `n1`, its state under `dir`, running `tasks`; keep the sender while the
/// pipeline runs (the tasks input stops when it goes).
fn node_n1(dir: &Path, tasks: Vec<TaskLog>) -> (Place, tokio::sync::watch::Sender<Vec<TaskLog>>) {
    let (tx, rx) = tokio::sync::watch::channel(tasks);
    let place = Place {
        node: "n1".into(),
        dir: dir.join("state"),
        memory_dir: dir.join("shm"),
        tasks: rx,
    };
    (place, tx)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn post(port: u16, tag: &str, body: &str) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", body, &format!("http://127.0.0.1:{port}/{tag}")])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "POST /{tag}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The records in an output's file, as JSON lines.
fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_reaches_the_outputs_its_tag_routes_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let pipeline = manifest(dir.path(), port);
    // Two tasks on the node: the selector takes api's, not db's.
    let logs = dir.path().join("logs");
    let mut tasks = Vec::new();
    for (service, task) in [("api", "api.1"), ("db", "db.1")] {
        let d = logs.join(task);
        std::fs::create_dir_all(&d).expect("mkdir");
        let line = serde_json::json!({
            "log": format!("{{\"n\": 1, \"from\": \"{task}\"}}\n"),
            "stream": "stdout",
            "time": "2026-12-04T05:06:07.000000042Z",
        });
        std::fs::write(d.join("container.log"), format!("{line}\n")).expect("write log");
        tasks.push(TaskLog {
            service: service.into(),
            task: task.into(),
            labels: BTreeMap::new(),
            dir: d,
            container: format!("c-{task}"),
        });
    }
    let (place, _tasks) = node_n1(dir.path(), tasks);
    let running = start("routes", 1, &pipeline.spec, place)
        .await
        .expect("the pipeline starts");

    for tag in ["app.x", "app.x.y", "audit", "task.web.w1"] {
        let body = format!("{{\"via\": \"{tag}\"}}");
        tokio::task::spawn_blocking(move || post(port, tag, &body))
            .await
            .expect("curl");
    }

    let (api, one, rest) = (
        dir.path().join("api.ndjson"),
        dir.path().join("one.ndjson"),
        dir.path().join("rest.ndjson"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&api).len() + lines(&one).len() + lines(&rest).len() < 6
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let via = |path: &Path| -> Vec<String> {
        let mut v: Vec<String> = lines(path)
            .iter()
            .map(|r| {
                r["via"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("task {}", r["from"].as_str().unwrap_or("?")))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(via(&one), ["app.x"], "app.* takes one part");
    assert_eq!(
        via(&api),
        ["audit", "task api.1", "task.web.w1"],
        "{{api,web}}, and audit copied"
    );
    assert_eq!(
        via(&rest),
        ["app.x.y", "audit"],
        "** takes the rest; db's task is not selected"
    );
    let task = lines(&api)
        .into_iter()
        .find(|r| r["from"] == "api.1")
        .expect("the task's line");
    assert_eq!(
        task,
        serde_json::json!({"n": 1, "from": "api.1", "node": "n1", "service": "api"}),
        "parsed (its fields in place of the raw text), node and service (from the tag) added, stream removed"
    );

    let status = running.status("n1");
    assert_eq!(status.events_in, 5, "{status:?}");
    assert_eq!(
        status.events_out, 6,
        "audit counts once per copy: {status:?}"
    );
    let apps = status
        .inputs
        .iter()
        .find(|i| i.name == "apps")
        .expect("apps");
    assert_eq!(apps.events, 1);
    assert_eq!(status.buffered_bytes, 0);
    running.stop();
}

#[tokio::test]
async fn a_port_in_use_fails_the_start_and_says_which_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let pipeline = manifest(dir.path(), port);
    let (place, _tasks) = node_n1(dir.path(), Vec::new());
    let err = start("routes", 1, &pipeline.spec, place)
        .await
        .err()
        .expect("the start fails")
        .to_string();
    assert!(
        err.contains("input web") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_under_drop_oldest_drops_counts_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, closed) = (free_port(), free_port());
    let text = format!(
        r#"apiVersion: shoal.dev/v1
kind: LogPipeline
metadata: {{name: small}}
spec:
  inputs: [{{name: web, type: http, listen: "127.0.0.1:{port}"}}]
  outputs:
    - name: nowhere
      type: http
      url: "http://127.0.0.1:{closed}/"
      buffer: {{chunkLimit: 1k, totalLimit: 4k, overflow: drop_oldest, flushInterval: 50ms, retry: {{maxAttempts: 1000, base: 1s}}}}
"#
    );
    let pipeline: LogPipeline = serde_yaml::from_str(&text).expect("a LogPipeline");
    let (place, _tasks) = node_n1(dir.path(), Vec::new());
    let running = start("small", 1, &pipeline.spec, place)
        .await
        .expect("starts");
    // 200 records of ~100 bytes: far more than 4k.
    let body = format!(
        "[{}]",
        vec![format!("{{\"pad\": \"{}\"}}", "x".repeat(90)); 200].join(",")
    );
    tokio::task::spawn_blocking(move || post(port, "app", &body))
        .await
        .expect("curl");
    let status = running.status("n1");
    assert!(status.dropped > 0, "dropped, counted: {status:?}");
    assert!(
        status.buffered_bytes <= 4096,
        "within the limit: {status:?}"
    );
    let events = running.take_events();
    assert!(
        events
            .iter()
            .any(|e| e.warning && e.reason == "EventsDropped" && e.message.contains("nowhere")),
        "{events:?}"
    );
    running.stop();
}

#[tokio::test]
async fn a_forward_input_answers_udp_heartbeats_on_its_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let text = format!(
        "apiVersion: shoal.dev/v1\nkind: LogPipeline\nmetadata: {{name: hb}}\nspec:\n  \
         inputs: [{{name: fwd, type: forward, listen: \"127.0.0.1:{port}\"}}]\n  \
         outputs: [{{name: out, type: stdout}}]\n"
    );
    let pipeline: LogPipeline = serde_yaml::from_str(&text).expect("a LogPipeline");
    let (place, _tasks) = node_n1(dir.path(), Vec::new());
    let running = start("hb", 1, &pipeline.spec, place).await.expect("starts");
    // As Fluentd's out_forward checks a server with `heartbeat_type udp`.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    socket
        .send_to(&[0], ("127.0.0.1", port))
        .await
        .expect("send");
    let mut buf = [9u8; 8];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .expect("recv");
    assert_eq!(&buf[..n], &[0]);
    running.stop();
}
