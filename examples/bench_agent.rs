//! Agent benchmark, as root, with real runc and a real registry:
//!
//! - raw_runc_run_p50_ms: `runc run --detach` of the test image's bundle (overlay rootfs,
//!   the spec shoal writes), one at a time, the baseline; and raw_runc_run_50_at_once_*:
//!   50 such runs started together, the baseline for 50 tasks starting together;
//!   raw_runc_run_net_50_at_once_*: the same with what a task also gets, done by hand
//!   with `ip`: a network namespace, a veth pair on a bridge, an address and a route;
//! - task_start_p50/p99_ms: from a task's assignment (seen bound to the node) until it
//!   reports running, for a 50-replica service (image already pulled);
//! - containers_started_per_s: 50 / (apply until all 50 running);
//! - agent_rss_mib: the agent's resident memory, idle with 50 running containers (each
//!   container also has its own monitor process: monitor_rss_mib, on average, and
//!   monitor_pss_mib, its proportional share, which counts shared libc pages once).
//!
//! The agent keeps namespaces ready (`--netns-pool`); the run waits until its pool is
//! full before the burst, as on a node that has been up a while.
//!
//! Usage: bench-agent [--containers N] [--netns-pool N]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_agent::container::{make_bundle, ContainerRequest, Overlay, RootfsLayout};
use shoal_agent::image::{self, ImageStore};
#[path = "support/mod.rs"]
mod support;

use shoal_wire::pb;
use support::{
    apply, connect_when_up, join_token, shoal, spawn, start_server, watch_service_tasks,
};

/// A `kB` figure of `/proc/PID/{file}` (`status`'s VmRSS, `smaps_rollup`'s Pss).
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Bundles of the test image (overlay rootfs, the spec shoal writes) for raw runs.
/// The bridge and subnet prefix of the networked raw baseline.
const RAW_BRIDGE: &str = "benchraw0";
const RAW_NET: &str = "10.249.0";

fn netns_name(i: usize) -> String {
    format!("benchraw-{}-{i}", std::process::id())
}

fn bundles(
    store: &ImageStore,
    name: &str,
    dir: &Path,
    n: usize,
    networked: bool,
) -> Vec<(RootfsLayout, String)> {
    let record = store.get(name).expect("index").expect("image");
    (0..n)
        .map(|i| {
            let layout = RootfsLayout::new(&dir.join(format!("raw-{i}")));
            let req = ContainerRequest {
                container: shoal_api::ContainerSpec {
                    command: vec!["sleep".into(), "100000".into()],
                    ..Default::default()
                },
                hostname: format!("raw-{i}"),
                netns: networked.then(|| format!("/run/netns/{}", netns_name(i)).into()),
                ..Default::default()
            };
            make_bundle(store, &record, &req, &layout, &Overlay).expect("bundle");
            (layout, format!("bench-raw-{}-{i}", std::process::id()))
        })
        .collect()
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("ip");
    assert!(status.success(), "ip {args:?} failed");
}

/// What the agent does for a container's network, by hand: namespace, veth pair on the
/// bridge, address, route.
fn raw_network(i: usize) {
    let (ns, host, peer) = (netns_name(i), format!("brv{i}"), format!("brp{i}"));
    let addr = format!("{RAW_NET}.{}/24", i + 2);
    let gateway = format!("{RAW_NET}.1");
    ip(&["netns", "add", &ns]);
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &peer, "netns", &ns]);
    ip(&["link", "set", &host, "master", RAW_BRIDGE, "up"]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "link", "set", &peer, "name", "eth0", "up"]);
    ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
    ip(&["-n", &ns, "route", "add", "default", "via", &gateway]);
}

/// `runc run --detach` of each bundle, `concurrent` at a time (after setting up its
/// network by hand when `networked`); milliseconds each.
fn raw_runc(
    bundles: &[(RootfsLayout, String)],
    root: &Path,
    concurrent: bool,
    networked: bool,
) -> Vec<f64> {
    let run = |i: usize, (layout, id): &(RootfsLayout, String)| {
        let t0 = Instant::now();
        if networked {
            raw_network(i);
        }
        let status = Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["run", "--detach", "--bundle"])
            .arg(&layout.dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runc");
        assert!(status.success(), "runc run failed");
        t0.elapsed().as_secs_f64() * 1000.0
    };
    let samples = if concurrent {
        std::thread::scope(|s| {
            let handles: Vec<_> = bundles
                .iter()
                .enumerate()
                .map(|(i, b)| s.spawn(move || run(i, b)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        })
    } else {
        bundles.iter().enumerate().map(|(i, b)| run(i, b)).collect()
    };
    for (i, (layout, id)) in bundles.iter().enumerate() {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", id])
            .status();
        layout.remove(&Overlay).expect("remove");
        if networked {
            let _ = Command::new("ip")
                .args(["netns", "del", &netns_name(i)])
                .status();
        }
    }
    samples
}

/// Waits until the agent's namespace pool has stopped growing; its size.
async fn wait_pool_full(node: &Path) -> usize {
    let count = || {
        std::fs::read_dir(node.join("netns-pool"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let begun = Instant::now();
    while count() == 0 && begun.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut last, mut since) = (usize::MAX, Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::main]
async fn main() {
    let mut n = 50usize;
    let mut pool: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--containers" => {
                n = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--containers N")
            }
            "--netns-pool" => pool = Some(args.next().expect("--netns-pool N")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(nix::unistd::geteuid().is_root(), "bench-agent needs root");
    let registry = shoal_testkit::Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = tmp.path().join("node");
    let store = ImageStore::open(&node.join("images")).expect("store");
    eprintln!("pulling {}", registry.image());
    image::pull(&store, &registry.image(), &Default::default(), &mut |_| {})
        .await
        .expect("pull");

    eprintln!("raw runc run --detach: 20 one after another, then {n} at once");
    let root = tmp.path().join("raw-runtime");
    let mut raw = raw_runc(
        &bundles(&store, &registry.image(), tmp.path(), 20, false),
        &root,
        false,
        false,
    );
    raw.sort_by(f64::total_cmp);
    let mut raw_n = raw_runc(
        &bundles(&store, &registry.image(), tmp.path(), n, false),
        &root,
        true,
        false,
    );
    raw_n.sort_by(f64::total_cmp);
    eprintln!("raw runc run --detach with a network set up by hand: {n} at once");
    let _ = Command::new("ip")
        .args(["link", "del", RAW_BRIDGE])
        .status();
    ip(&["link", "add", RAW_BRIDGE, "type", "bridge"]);
    ip(&["addr", "add", &format!("{RAW_NET}.1/24"), "dev", RAW_BRIDGE]);
    ip(&["link", "set", RAW_BRIDGE, "up"]);
    let mut raw_net = raw_runc(
        &bundles(&store, &registry.image(), tmp.path(), n, true),
        &root,
        true,
        true,
    );
    raw_net.sort_by(f64::total_cmp);
    ip(&["link", "del", RAW_BRIDGE]);

    let server = start_server(&tmp.path().join("server"), &[]);
    let mut client = connect_when_up(&server).await;
    let token = join_token(&mut client).await;
    let (agent_listen, node_data) = (
        format!("127.0.0.1:{}", shoal_testkit::free_port()),
        node.display().to_string(),
    );
    let mut agent_args = vec![
        "agent",
        "--join",
        &server.url,
        "--token",
        &token,
        "--name",
        "bench-1",
        "--stop-grace-period",
        "1s",
        "--listen",
        &agent_listen,
        "--data-dir",
        &node_data,
    ];
    if let Some(size) = &pool {
        agent_args.extend(["--netns-pool", size]);
    }
    let agent = spawn(&agent_args, None);
    let pooled = if pool.as_deref() == Some("0") {
        0
    } else {
        wait_pool_full(&node).await
    };

    // Follow the tasks: when each is first seen bound, and when first seen running.
    let mut stream = watch_service_tasks(&mut client, "bench").await;
    eprintln!("starting {n} containers");
    let t0 = Instant::now();
    apply(
        &mut client,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: bench}}\nspec:\n  \
             image: {}\n  command: [sleep, '100000']\n  replicas: {n}\n",
            registry.image()
        ),
    )
    .await;
    let mut bound: HashMap<String, Instant> = HashMap::new();
    let mut running: HashMap<String, Instant> = HashMap::new();
    while running.len() < n {
        let Some(msg) = stream.message().await.expect("watch") else {
            panic!("watch ended")
        };
        if msg.r#type == "SYNCED" || msg.r#type == "DELETED" {
            continue;
        }
        let t: serde_json::Value = serde_json::from_str(&msg.json).expect("json");
        let name = t["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !t["spec"]["node"].is_null() {
            bound.entry(name.clone()).or_insert_with(Instant::now);
        }
        if t["status"]["state"] == "running" {
            running.entry(name).or_insert_with(Instant::now);
        }
    }
    let all_running = t0.elapsed().as_secs_f64();
    let mut starts: Vec<f64> = running
        .iter()
        .filter_map(|(name, at)| bound.get(name).map(|b| (*at - *b).as_secs_f64() * 1000.0))
        .collect();
    starts.sort_by(f64::total_cmp);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_rss = rss_kib(agent.0.id()) as f64 / 1024.0;
    let monitor_exe = shoal()
        .with_file_name("shoal-monitor")
        .display()
        .to_string();
    let monitor_pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(&node.display().to_string()) && c.starts_with(&monitor_exe)
            })
        })
        .collect();
    let mean_mib =
        |kib: Vec<u64>| kib.iter().sum::<u64>() as f64 / kib.len().max(1) as f64 / 1024.0;
    let monitor_rss = mean_mib(monitor_pids.iter().map(|p| rss_kib(*p)).collect());
    // What each monitor costs the node: shared pages (libc's) divided among their users.
    let monitor_pss = mean_mib(
        monitor_pids
            .iter()
            .map(|p| proc_kib(*p, "smaps_rollup", "Pss:"))
            .collect(),
    );

    eprintln!("cleaning up");
    let _ = client
        .delete(pb::DeleteRequest {
            kind: "Service".into(),
            name: "bench".into(),
        })
        .await;
    // The agent removes a container's directory last, after the runtime's state and the
    // mounts: an empty directory means all is gone.
    let containers = node.join("containers");
    let mut left = usize::MAX;
    for _ in 0..240 {
        left = std::fs::read_dir(&containers)
            .map(|d| d.count())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(agent);
    if left > 0 {
        eprintln!("warning: {left} containers were not cleaned up by the agent; removing them");
        shoal_testkit::remove_node_containers(&node);
    }

    println!("raw_runc_run_p50_ms: {:.0} ms", percentile(&raw, 50));
    println!(
        "raw_runc_run_{n}_at_once_p50_ms: {:.0} ms",
        percentile(&raw_n, 50)
    );
    println!(
        "raw_runc_run_{n}_at_once_p99_ms: {:.0} ms",
        percentile(&raw_n, 99)
    );
    println!(
        "raw_runc_run_net_{n}_at_once_p50_ms: {:.0} ms",
        percentile(&raw_net, 50)
    );
    println!(
        "raw_runc_run_net_{n}_at_once_p99_ms: {:.0} ms",
        percentile(&raw_net, 99)
    );
    println!("netns_pool: {pooled} namespaces");
    println!("task_start_p50_ms: {:.0} ms", percentile(&starts, 50));
    println!("task_start_p99_ms: {:.0} ms", percentile(&starts, 99));
    println!(
        "containers_started_per_s: {:.1} containers/s",
        n as f64 / all_running
    );
    println!("agent_rss_mib: {agent_rss:.1} MiB");
    println!("monitor_rss_mib: {monitor_rss:.1} MiB");
    println!("monitor_pss_mib: {monitor_pss:.2} MiB");
}
