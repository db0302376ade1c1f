//! Scheduling benchmark, on both stores, with simulated nodes through the real agent
//! API (`shoal sim`) and a real `shoal server`:
//!
//! - placements_per_s: a 10,000-replica service on 1,000 nodes, from apply until every
//!   task is bound to a node;
//! - apply_to_running_p50/p99_ms: a 100-replica service, apply until all running (10 runs);
//! - heartbeats_per_s, server_cpu_idle_nodes_pct: over 10 s of the nodes only
//!   heartbeating, what the server renewed (its `Info` count) and the share of a core
//!   it used;
//! - node_loss_recovery_s: a node process dies; seconds until its tasks run elsewhere
//!   (default heartbeats: 1s period, down after 3 missed and 1s of grace);
//! - store_raw_writes_per_s: raw creates through the Store, same concurrency as the
//!   controllers use, as the baseline.
//!
//! Usage: bench-schedule --etcd http://127.0.0.1:2379 [--nodes N] [--tasks N]
//! [--stores embedded,etcd]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use shoal_store::{EmbeddedStore, EtcdStore, Store};
use shoal_wire::pb::{self, api_client::ApiClient};
use support::{apply, connect_when_up, spawn, start_server, watch_service_tasks};
use tonic::transport::Channel;

struct Args {
    etcd: String,
    nodes: usize,
    tasks: usize,
    stores: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        etcd: "http://127.0.0.1:2379".into(),
        nodes: 1000,
        tasks: 10_000,
        stores: vec!["embedded".into(), "etcd".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--etcd" => a.etcd = v,
            "--nodes" => a.nodes = v.parse().expect("--nodes: a number"),
            "--tasks" => a.tasks = v.parse().expect("--tasks: a number"),
            "--stores" => a.stores = v.split(',').map(str::to_string).collect(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

async fn raw_writes(store: Arc<dyn Store>, n: usize) -> f64 {
    let prefix = format!("/bench-raw/{}/", std::process::id());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (store, prefix) = (store.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                store
                    .create(&format!("{prefix}{i:08}"), vec![b'x'; 700], None)
                    .await
                    .expect("create");
                i += 64;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn list(
    client: &mut ApiClient<Channel>,
    kind: &str,
    selector: &str,
) -> Vec<serde_json::Value> {
    let r = client
        .list(pb::ListRequest {
            kind: kind.into(),
            label_selector: selector.into(),
            involved_object: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    r.items
        .iter()
        .map(|j| serde_json::from_str(j).expect("json"))
        .collect()
}

async fn delete_and_wait(client: &mut ApiClient<Channel>, name: &str) {
    let _ = client
        .delete(pb::DeleteRequest {
            kind: "Service".into(),
            name: name.into(),
        })
        .await;
    let selector = format!("shoal.dev/service={name}");
    while !list(client, "Task", &selector).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_nodes(client: &mut ApiClient<Channel>, n: usize) {
    loop {
        let ready = list(client, "Node", "")
            .await
            .iter()
            .filter(|n| n["status"]["state"] == "ready")
            .count();
        if ready >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Time from `since` until `need` tasks of `service` satisfy `ok` (followed by a watch;
/// counted incrementally so the bench itself stays O(events)).
async fn until_tasks(
    client: &mut ApiClient<Channel>,
    service: &str,
    since: Instant,
    need: usize,
    ok: impl Fn(&Seen) -> bool,
) -> Duration {
    let mut stream = watch_service_tasks(client, service).await;
    let mut matching: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut progress = Instant::now();
    while let Some(msg) = stream.message().await.expect("watch message") {
        if progress.elapsed() >= Duration::from_secs(1) {
            progress = Instant::now();
            eprintln!(
                "  {:>5.1}s: {} tasks seen, {} done",
                since.elapsed().as_secs_f64(),
                seen.len(),
                matching.len()
            );
        }
        if msg.r#type != "SYNCED" {
            let t: Seen = serde_json::from_str(&msg.json).expect("task json");
            let name = t.metadata.name.clone();
            seen.insert(name.clone());
            if msg.r#type != "DELETED" && ok(&t) {
                matching.insert(name);
            } else {
                matching.remove(&name);
            }
        }
        if matching.len() >= need {
            return since.elapsed();
        }
    }
    panic!("watch ended");
}

/// What the benchmark reads of a task. Decoding only this keeps its own watch cheap: it
/// runs on the same two cores as what it measures.
#[derive(serde::Deserialize)]
struct Seen {
    metadata: SeenMeta,
    #[serde(default)]
    spec: SeenSpec,
    #[serde(default)]
    status: Option<SeenStatus>,
}

#[derive(serde::Deserialize)]
struct SeenMeta {
    name: String,
    #[serde(default)]
    labels: std::collections::HashMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct SeenSpec {
    node: Option<String>,
}

#[derive(serde::Deserialize)]
struct SeenStatus {
    #[serde(default)]
    state: String,
}

impl Seen {
    /// Running, and not a history copy.
    fn live_and_running(&self) -> bool {
        !self.metadata.labels.contains_key("shoal.dev/history")
            && self.status.as_ref().is_some_and(|s| s.state == "running")
    }
}

struct Figures {
    placements: f64,
    raw: f64,
    p50: f64,
    p99: f64,
    recovery: f64,
    heartbeats: f64,
    server_cpu: f64,
}

/// The CPU seconds process `pid` has used (user and system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, 12 and 13 after the state.
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Heartbeats the server renewed per second, and the share of a core it used,
/// over `secs` of nodes doing nothing else.
async fn idle_heartbeats(client: &mut ApiClient<Channel>, pid: u32, secs: u64) -> (f64, f64) {
    let count = |c: &mut ApiClient<Channel>| {
        let mut c = c.clone();
        async move {
            c.info(pb::InfoRequest {})
                .await
                .expect("info")
                .into_inner()
                .heartbeats
        }
    };
    let (h0, cpu0, t0) = (count(client).await, cpu_seconds(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (h1, cpu1, dt) = (
        count(client).await,
        cpu_seconds(pid),
        t0.elapsed().as_secs_f64(),
    );
    ((h1 - h0) as f64 / dt, (cpu1 - cpu0) / dt * 100.0)
}

/// One run on a store: every figure over mutual TLS (the default), or with
/// `plaintext` the placements and apply figures over `--insecure`, for `tls_overhead`.
async fn bench_store(a: &Args, etcd: Option<&str>, plaintext: bool) -> Figures {
    let label = match (etcd.is_some(), plaintext) {
        (true, false) => "etcd",
        (true, true) => "etcd.plaintext",
        (false, false) => "embedded",
        (false, true) => "embedded.plaintext",
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let raw_store: Arc<dyn Store> = match etcd {
        Some(e) => Arc::new(EtcdStore::connect(&[e.to_string()]).await.expect("etcd")),
        None => Arc::new(EmbeddedStore::open(&dir.path().join("raw")).expect("embedded")),
    };
    eprintln!("[{label}] raw store writes");
    let raw = raw_writes(raw_store, a.tasks).await;

    let mut server_args: Vec<String> = Vec::new();
    if let Some(e) = etcd {
        server_args.push("--store".into());
        server_args.push(format!("etcd://{}", e.trim_start_matches("http://")));
    }
    if plaintext {
        server_args.push("--insecure".into());
    }
    let server_refs: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = start_server(&dir.path().join("server"), &server_refs);
    let mut client = connect_when_up(&server).await;
    let nodes = a.nodes.to_string();
    let _sim = spawn(
        &["sim", "--nodes", &nodes, "--start-delay", "100ms"],
        Some(&server),
    );
    eprintln!("[{label}] waiting for {} nodes", a.nodes);
    wait_nodes(&mut client, a.nodes).await;
    eprintln!("[{label}] {} idle nodes heartbeating for 10s", a.nodes);
    let (heartbeats, server_cpu) = idle_heartbeats(&mut client, server.proc.0.id(), 10).await;

    eprintln!("[{label}] placing {} tasks", a.tasks);
    let t0 = Instant::now();
    apply(&mut client, &format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: bulk}}\nspec: {{image: bench:1, replicas: {}}}\n", a.tasks)).await;
    let n = a.tasks;
    let placed = until_tasks(&mut client, "bulk", t0, n, |t| t.spec.node.is_some()).await;
    let placements = a.tasks as f64 / placed.as_secs_f64();
    eprintln!(
        "[{label}] {} placements in {:.2}s; cleaning up",
        a.tasks,
        placed.as_secs_f64()
    );
    delete_and_wait(&mut client, "bulk").await;

    eprintln!("[{label}] apply to running, 100 replicas x 10");
    let mut samples = Vec::new();
    for i in 0..10 {
        let name = format!("r100-{i}");
        let t0 = Instant::now();
        apply(&mut client, &format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{image: bench:1, replicas: 100}}\n")).await;
        let took = until_tasks(&mut client, &name, t0, 100, Seen::live_and_running).await;
        samples.push(took.as_secs_f64() * 1000.0);
        delete_and_wait(&mut client, &name).await;
    }
    let in_order: Vec<String> = samples.iter().map(|s| format!("{s:.0}")).collect();
    eprintln!(
        "[{label}] apply to running, ms in run order: {}",
        in_order.join(" ")
    );
    samples.sort_by(|a, b| a.total_cmp(b));
    let p50 = samples[samples.len() / 2];
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];

    if plaintext {
        return Figures {
            placements,
            raw,
            p50,
            p99,
            recovery: f64::NAN,
            heartbeats,
            server_cpu,
        };
    }
    eprintln!("[{label}] node loss");
    let victim = spawn(
        &[
            "sim",
            "--nodes",
            "5",
            "--prefix",
            "victim",
            "--labels",
            "pool=loss",
            "--start-delay",
            "100ms",
        ],
        Some(&server),
    );
    let _spare = spawn(
        &[
            "sim",
            "--nodes",
            "5",
            "--prefix",
            "spare",
            "--labels",
            "pool=loss",
            "--start-delay",
            "100ms",
        ],
        Some(&server),
    );
    wait_nodes(&mut client, a.nodes + 10).await;
    apply(&mut client, "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: lossy}\nspec: {image: bench:1, replicas: 20, placement: {constraints: [\"node.labels.pool == loss\"]}}\n").await;
    until_tasks(
        &mut client,
        "lossy",
        Instant::now(),
        20,
        Seen::live_and_running,
    )
    .await;
    let on_victims: HashSet<String> = list(&mut client, "Task", "shoal.dev/service=lossy")
        .await
        .iter()
        .filter(|t| {
            t["spec"]["node"]
                .as_str()
                .is_some_and(|n| n.starts_with("victim"))
        })
        .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    eprintln!(
        "[{label}] killing the node process holding {} tasks",
        on_victims.len()
    );
    let t0 = Instant::now();
    drop(victim);
    let recovery = until_tasks(&mut client, "lossy", t0, 20, |t| {
        t.live_and_running()
            && t.spec
                .node
                .as_deref()
                .is_some_and(|n| n.starts_with("spare"))
    })
    .await
    .as_secs_f64();
    Figures {
        placements,
        raw,
        p50,
        p99,
        recovery,
        heartbeats,
        server_cpu,
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut figures = Vec::new();
    for label in &a.stores {
        let etcd = (label == "etcd").then_some(a.etcd.as_str());
        figures.push((label.clone(), bench_store(&a, etcd, false).await));
    }
    // The same placements and applies without TLS, on the first store.
    let first = a
        .stores
        .first()
        .cloned()
        .unwrap_or_else(|| "embedded".into());
    let etcd = (first == "etcd").then_some(a.etcd.as_str());
    let plaintext = bench_store(&a, etcd, true).await;
    for (label, f) in &figures {
        println!("placements_per_s.{label}: {:.0} tasks/s", f.placements);
        println!("store_raw_writes_per_s.{label}: {:.0} writes/s", f.raw);
        println!("apply_to_running_p50_ms.{label}: {:.0} ms", f.p50);
        println!("apply_to_running_p99_ms.{label}: {:.0} ms", f.p99);
        println!("node_loss_recovery_s.{label}: {:.1} s", f.recovery);
        println!("heartbeats_per_s.{label}: {:.0} heartbeats/s", f.heartbeats);
        println!("server_cpu_idle_nodes_pct.{label}: {:.1} %", f.server_cpu);
    }
    if let Some((_, tls)) = figures.iter().find(|(l, _)| *l == first) {
        println!(
            "placements_per_s.{first}.plaintext: {:.0} tasks/s",
            plaintext.placements
        );
        println!(
            "apply_to_running_p99_ms.{first}.plaintext: {:.0} ms",
            plaintext.p99
        );
        println!(
            "server_cpu_idle_nodes_pct.{first}.plaintext: {:.1} %",
            plaintext.server_cpu
        );
        println!(
            "tls_overhead.{first}: {:.1} % (placements_per_s lost to mutual TLS: {:.0} vs {:.0} plaintext; apply_to_running_p99_ms {:.0} vs {:.0})",
            (1.0 - tls.placements / plaintext.placements) * 100.0,
            tls.placements,
            plaintext.placements,
            tls.p99,
            plaintext.p99
        );
    }
}
