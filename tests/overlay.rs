//! Overlay networks on a real three-host cluster (`hack/cluster.sh`: hosts are network
//! namespaces, each with its own agent and real runc containers): tasks on different
//! hosts reach each other over VXLAN by address and by name (the node's resolver:
//! `<task>`, `tasks.<service>`); a service's name is its VIP, balanced in the kernel
//! over the replicas on every host; a task that goes leaves DNS and the VIP before its
//! container stops; every host's forwarding and neighbour entries follow the tasks; an
//! agent killed and restarted leaves the datapath as it was; deleting a network
//! removes its devices from every host; containers reach an outside namespace through
//! their node's NAT; a port published through the routing mesh answers on every host
//! and its task sees the client's own address. As root.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use support::*;

const PREFIX: &str = "ovl";
const NET: &str = "10.213.7";
const HOSTS: usize = 3;

struct Cluster {
    url: String,
    /// Links on each host before any network was made.
    baseline: Vec<BTreeSet<String>>,
}

fn script(args: &[&str]) -> Output {
    Command::new(shoal_testkit::workspace_root().join("hack/cluster.sh"))
        .args(args)
        .args(["--prefix", PREFIX])
        .env("SHOAL_BIN", env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_CLUSTER_NET", NET)
        // A lost host is down after 9 s, not 15; an agent restart on a busy machine
        // still fits in that lease (a lapsed one reschedules its tasks, rightly).
        .env("SHOAL_SERVER_ARGS", "--heartbeat-period 3s")
        .output()
        .expect("run hack/cluster.sh")
}

impl Cluster {
    fn up() -> Cluster {
        let out = ok(script(&["up", &HOSTS.to_string()]));
        let last = out.lines().last().unwrap_or_default();
        let setting = |name: &str| {
            last.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} on the last line: {out}"))
                .to_string()
        };
        let url = setting("SHOAL_SERVER=");
        register_config(&url, setting("SHOAL_CONFIG=").into());
        let mut c = Cluster {
            url,
            baseline: Vec::new(),
        };
        c.baseline = (0..HOSTS).map(|h| c.links(h)).collect();
        c
    }

    fn shoal(&self, args: &[&str]) -> Output {
        shoal_at(&self.url, args, None)
    }

    fn apply(&self, yaml: &str) {
        ok(shoal_at(&self.url, &["apply", "-f", "-"], Some(yaml)));
    }

    /// Runs `cmd` in host `h`'s namespace; its stdout.
    fn on_host(&self, h: usize, cmd: &[&str]) -> String {
        ok(Command::new("ip")
            .args(["netns", "exec", &format!("{PREFIX}{h}")])
            .args(cmd)
            .output()
            .expect("ip netns exec"))
    }

    /// The namespaces host `h`'s agent keeps its overlay networks in (one each).
    fn overlay_namespaces(&self, h: usize) -> Vec<std::path::PathBuf> {
        let dir = format!("/tmp/shoal-cluster-{PREFIX}/{PREFIX}{h}/overlay-netns");
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        found.sort();
        found
    }

    /// Runs `cmd` in the namespace at `netns`; its stdout. A namespace the agent
    /// removed since it was listed (its network no longer used here) has nothing in
    /// it: empty.
    fn in_namespace(netns: &std::path::Path, cmd: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(cmd)
            .output()
            .expect("nsenter");
        let mounted = || {
            let path = netns.display().to_string();
            std::fs::read_to_string("/proc/self/mounts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(path.as_str()))
        };
        if !out.status.success() && !mounted() {
            return String::new();
        }
        ok(out)
    }

    /// Host `h`'s links, and those in its overlay networks' namespaces (as
    /// `<vni>/<name>`), but for the host ends of the agent's prepared namespaces
    /// (`shp...`), which it keeps whatever networks there are and renews as tasks
    /// take them.
    fn links(&self, h: usize) -> BTreeSet<String> {
        let names = |out: String| -> Vec<String> {
            out.lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
                .filter(|n| !n.starts_with("shp"))
                .collect()
        };
        let mut all: BTreeSet<String> = names(self.on_host(h, &["ip", "-o", "link", "show"]))
            .into_iter()
            .collect();
        for ns in self.overlay_namespaces(h) {
            let vni = ns
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let inside = names(Self::in_namespace(&ns, &["ip", "-o", "link", "show"]));
            all.extend(inside.into_iter().map(|n| format!("{vni}/{n}")));
        }
        all
    }

    /// The overlay's forwarding and neighbour entries on host `h` (in its networks'
    /// namespaces), as `ip -> node`.
    fn overlay_entries(&self, h: usize) -> BTreeSet<String> {
        let mut entries = BTreeSet::new();
        for ns in self.overlay_namespaces(h) {
            let fdb = Self::in_namespace(&ns, &["bridge", "fdb", "show"]);
            let neigh = Self::in_namespace(&ns, &["ip", "neigh", "show"]);
            entries.extend(
                fdb.lines()
                    .chain(neigh.lines())
                    .filter(|l| l.contains(" dev sx"))
                    .filter(|l| l.contains(" dst ") || l.contains(" lladdr "))
                    .map(str::to_string),
            );
        }
        entries
    }

    fn restart_agent(&self, h: usize) {
        ok(script(&["restart-agent", &format!("{PREFIX}{h}")]));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = script(&["down"]);
        if !out.status.success() {
            eprintln!("hack/cluster.sh down failed: {}", stderr(&out));
        }
    }
}

/// (task name, node, address on `net`) of the service's running tasks that are meant
/// to keep running.
fn placed(c: &Cluster, service: &str, net: &str) -> Vec<(String, String, String)> {
    let prefix = format!("{net}=");
    tasks_of(c, service)
        .iter()
        .filter(|t| is_live(t) && state(t) == "running" && t["spec"]["desiredState"] == "running")
        .filter_map(|t| {
            let address = t["status"]["addresses"]
                .as_array()?
                .iter()
                .find_map(|a| a.as_str()?.strip_prefix(&prefix))?
                .to_string();
            Some((
                t["metadata"]["name"].as_str()?.to_string(),
                t["spec"]["node"].as_str()?.to_string(),
                address,
            ))
        })
        .collect()
}

/// `wget` from inside `task` of `http://HOST/index.html`: the page, or why not.
fn fetch(c: &Cluster, task: &str, host: &str) -> Result<String, String> {
    fetch_path(c, task, host, "index.html")
}

fn fetch_path(c: &Cluster, task: &str, host: &str, path: &str) -> Result<String, String> {
    let url = format!("http://{host}/{path}");
    let out = Command::new("timeout")
        .args(["10", env!("CARGO_BIN_EXE_shoal")])
        .args(["exec", task, "--", "wget", "-q", "-O", "-", &url])
        .envs(client_env(&c.url))
        .output()
        .expect("shoal exec");
    if out.status.success() {
        Ok(stdout(&out))
    } else {
        Err(format!("{}: {}", out.status, stderr(&out)))
    }
}

const WEB: &str = "apiVersion: shoal.dev/v1
kind: Network
metadata: {name: front}
spec: {driver: overlay, subnet: 10.10.1.0/24}
---
apiVersion: shoal.dev/v1
kind: Service
metadata: {name: web}
spec:
  image: local/busybox:1
  command: [sh, -c, 'hostname > /www/who && exec httpd -f -p 80 -h /www']
  replicas: 3
  networks: [front]
";

fn everyone_reaches_everyone(c: &Cluster, tasks: &[(String, String, String)]) {
    for (from, _, _) in tasks {
        for (to, node, ip) in tasks {
            if from != to {
                let page = fetch(c, from, ip)
                    .unwrap_or_else(|e| panic!("{from} -> {to} ({ip} on {node}): {e}"));
                assert_eq!(page.trim(), "hello from shoal", "{from} -> {to}");
            }
        }
    }
}

fn tasks_on_different_hosts_talk_over_the_overlay(c: &mut Cluster) {
    c.apply(WEB);
    wait("3 web tasks running with front addresses", 60, || {
        placed(c, "web", "front").len() == 3
    });
    let tasks = placed(c, "web", "front");
    let nodes: BTreeSet<&str> = tasks.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(nodes.len(), 3, "one per host: {tasks:?}");
    everyone_reaches_everyone(c, &tasks);
    // Every host knows the two tasks on the others, and only those.
    for h in 0..HOSTS {
        let entries = c.overlay_entries(h);
        assert_eq!(
            entries.len(),
            4,
            "2 forwarding + 2 neighbour entries on host {h}: {entries:?}"
        );
        // The network's own namespace keeps its bridged frames off the IP hooks
        // (br_netfilter's sysctl, where the module is loaded).
        for ns in c.overlay_namespaces(h) {
            let knob = "/proc/sys/net/bridge/bridge-nf-call-iptables";
            let inside = Cluster::in_namespace(
                &ns,
                &["sh", "-c", &format!("cat {knob} 2>/dev/null || echo 0")],
            );
            assert_eq!(inside.trim(), "0", "{knob} in {}", ns.display());
        }
    }
}

/// The addresses `name` resolves to from inside `task` (busybox's nslookup asks the
/// node's resolver that resolv.conf names).
fn resolve(c: &Cluster, task: &str, name: &str) -> BTreeSet<String> {
    let out = Command::new("timeout")
        .args(["10", env!("CARGO_BIN_EXE_shoal")])
        .args(["exec", task, "--", "busybox", "nslookup", name])
        .envs(client_env(&c.url))
        .output()
        .expect("shoal exec");
    let text = stdout(&out);
    // The first Address line is the resolver's own.
    text.lines()
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(str::trim)
        .filter(|a| !a.contains(':'))
        .map(str::to_string)
        .collect()
}

fn tasks_find_each_other_by_name(c: &mut Cluster) {
    let tasks = placed(c, "web", "front");
    let all: BTreeSet<String> = tasks.iter().map(|(_, _, ip)| ip.clone()).collect();
    for (from, _, _) in &tasks {
        assert_eq!(resolve(c, from, "tasks.web"), all, "tasks.web from {from}");
        for (to, _, ip) in &tasks {
            assert_eq!(
                resolve(c, from, to),
                BTreeSet::from([ip.clone()]),
                "{to} from {from}"
            );
        }
    }
    let (from, to) = (&tasks[0].0, &tasks[1].0);
    let page = fetch(c, from, to).unwrap_or_else(|e| panic!("{from} -> {to} by name: {e}"));
    assert_eq!(page.trim(), "hello from shoal");
    // A name the cluster does not know is not made up: nslookup finds nothing.
    assert!(resolve(c, from, "nowhere.invalid").is_empty());
}

/// The service's VIP on `net`, from `shoal network inspect`.
fn vip(c: &Cluster, net: &str, service: &str) -> String {
    let shown = json(c.shoal(&["network", "inspect", net, "-o", "json"]));
    shown["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == service)
        .and_then(|s| s["vip"].as_str())
        .unwrap_or_else(|| panic!("no VIP for {service}: {shown}"))
        .to_string()
}

/// Who answers `GET /who` through `host` from `task`, asked `n` times.
fn served_by(c: &Cluster, task: &str, host: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            fetch_path(c, task, host, "who")
                .unwrap_or_else(|e| panic!("{task} -> {host}: {e}"))
                .trim()
                .to_string()
        })
        .collect()
}

fn the_service_name_is_its_vip_served_by_replicas_on_every_host(c: &mut Cluster) {
    let tasks = placed(c, "web", "front");
    let vip = vip(c, "front", "web");
    let names: BTreeSet<String> = tasks.iter().map(|(n, _, _)| n.clone()).collect();
    for (from, _, _) in &tasks {
        assert_eq!(
            resolve(c, from, "web"),
            BTreeSet::from([vip.clone()]),
            "web from {from}"
        );
    }
    // 30 connections at random over 3 tasks miss one with odds of 1 in 60,000.
    assert_eq!(
        served_by(c, &tasks[0].0, &vip, 30),
        names,
        "through the VIP"
    );
    assert_eq!(served_by(c, &tasks[1].0, "web", 30), names, "by name");
}

fn an_agent_killed_and_restarted_leaves_the_datapath_as_it_was(c: &mut Cluster) {
    let tasks = placed(c, "web", "front");
    let before: Vec<_> = (0..HOSTS)
        .map(|h| (c.links(h), c.overlay_entries(h)))
        .collect();
    c.restart_agent(1);
    // The restarted agent has resynced once its node is ready again and its tasks
    // are still the same running ones.
    wait("the restarted agent's node is ready", 30, || {
        let nodes = json(c.shoal(&["get", "nodes", "-o", "json"]));
        nodes["items"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["status"]["state"] == "ready"))
    });
    // A node stays ready through a restart shorter than its heartbeat lease: what
    // says the new agent is there is that it serves its tasks again.
    let restarted = format!("{PREFIX}1");
    if let Some((task, _, _)) = tasks.iter().find(|(_, node, _)| *node == restarted) {
        wait("the restarted agent serves its tasks", 30, || {
            c.shoal(&["exec", task, "--", "true"]).status.success()
        });
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let now = placed(c, "web", "front");
    if now != tasks {
        // Why, for whoever reads the failure: the Events of the tasks and nodes.
        let events = stdout(&c.shoal(&["events"]));
        eprintln!("events after the restart:\n{events}");
    }
    assert_eq!(now, tasks, "the same tasks, same addresses");
    let after: Vec<_> = (0..HOSTS)
        .map(|h| (c.links(h), c.overlay_entries(h)))
        .collect();
    assert_eq!(after, before, "links and entries on every host");
    everyone_reaches_everyone(c, &tasks);
    // And every task still has its resolver: the restarted agent renewed its
    // prepared namespaces on the node bridge, whose MAC must not move with its ports.
    let ips: BTreeSet<String> = tasks.iter().map(|(_, _, ip)| ip.clone()).collect();
    for (task, _, _) in &tasks {
        assert_eq!(resolve(c, task, "tasks.web"), ips, "tasks.web from {task}");
    }
}

fn a_scaled_down_task_leaves_dns_before_its_container_stops_and_then_every_hosts_entries(
    c: &mut Cluster,
) {
    let before = placed(c, "web", "front");
    ok(c.shoal(&["scale", "service/web=2"]));
    wait("2 web tasks", 30, || placed(c, "web", "front").len() == 2);
    let tasks = placed(c, "web", "front");
    let kept: BTreeSet<&str> = tasks.iter().map(|(_, _, ip)| ip.as_str()).collect();
    let names: BTreeSet<String> = kept.iter().map(|s| s.to_string()).collect();
    let (gone, _, _) = before
        .iter()
        .find(|(_, _, ip)| !kept.contains(ip.as_str()))
        .expect("one task went");
    // httpd ignores SIGTERM, so the removed task's container runs through its grace
    // period (10 s): DNS has dropped it while it still runs.
    wait("tasks.web names only the tasks left", 5, || {
        resolve(c, &tasks[0].0, "tasks.web") == names
    });
    // Nor does the VIP send it anything.
    let left: BTreeSet<String> = tasks.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(
        served_by(c, &tasks[0].0, "web", 20),
        left,
        "the VIP's backends"
    );
    let task = json(c.shoal(&["get", "task", gone, "-o", "json"]));
    assert_eq!(state(&task), "running", "its container still runs: {task}");
    // The removed task's entries go once its container has stopped (httpd, as pid 1,
    // ignores SIGTERM: the grace period runs out first).
    wait("every host's entries name only the tasks left", 30, || {
        (0..HOSTS).all(|h| {
            let entries = c.overlay_entries(h);
            // An entry's address: `ip` in a neighbour line; a MAC made of it in FDB.
            entries.iter().all(|e| {
                kept.iter()
                    .any(|ip| e.contains(ip) || e.contains(&mac_hex(ip)))
            })
        })
    });
    everyone_reaches_everyone(c, &tasks);
}

/// The MAC an overlay address gets (02:42 and its four octets), as `bridge` prints it.
fn mac_hex(ip: &str) -> String {
    let octets: Vec<String> = ip
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap_or(0)))
        .collect();
    format!("02:42:{}", octets.join(":"))
}

/// A namespace beyond the hosts, on the cluster's bridge: only a host's uplink
/// reaches it, so a container gets there only through its node's NAT. An HTTP server
/// in it logs who connects. Removed on drop.
struct Outside {
    server: std::process::Child,
    log: std::path::PathBuf,
}

const OUTSIDE: &str = "ovl-out";

impl Outside {
    fn start() -> Outside {
        let ip = |args: &[&str]| ok(Command::new("ip").args(args).output().expect("ip"));
        ip(&["netns", "add", OUTSIDE]);
        ip(&[
            "link", "add", "ovl-outu", "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE,
        ]);
        ip(&[
            "link",
            "set",
            "ovl-outu",
            "master",
            &format!("{PREFIX}-br"),
            "up",
        ]);
        ip(&[
            "-n",
            OUTSIDE,
            "addr",
            "add",
            &format!("{NET}.200/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", OUTSIDE, "link", "set", "eth0", "up"]);
        let log = std::env::temp_dir().join(format!("shoal-outside-{}.log", std::process::id()));
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                OUTSIDE,
                "python3",
                "-m",
                "http.server",
                "8000",
            ])
            .args(["--bind", &format!("{NET}.200")])
            .stderr(std::fs::File::create(&log).expect("log"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        Outside { server, log }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "del", OUTSIDE]).status();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn containers_reach_the_outside_through_their_nodes_nat(c: &mut Cluster) {
    let outside = Outside::start();
    let tasks = placed(c, "web", "front");
    let (task, node, _) = &tasks[0];
    let url_host = format!("{NET}.200:8000");
    let mut got = Err(String::new());
    for _ in 0..50 {
        got = fetch_path(c, task, &url_host, "");
        if got.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    got.unwrap_or_else(|e| panic!("{task} -> the outside: {e}"));
    // The outside saw the node's own address, not the container's.
    let host: usize = node
        .trim_start_matches(PREFIX)
        .parse()
        .expect("host number");
    let seen = std::fs::read_to_string(&outside.log).unwrap_or_default();
    let from = format!("{NET}.{} ", host + 1);
    assert!(
        seen.lines()
            .any(|l| l.starts_with(&from) && l.contains("GET / ")),
        "the outside's log, wanting {from}: {seen}"
    );
}

/// Waits for the task `name` (one `shoal run -d` made) to run.
fn wait_running(c: &Cluster, name: &str) {
    wait(&format!("{name} runs"), 30, || {
        let t = c.shoal(&["get", "task", name, "-o", "json"]);
        t.status.success() && state(&json(t)) == "running"
    });
}

fn a_run_container_joins_by_flag_and_its_link_resolves_inside_it_only(c: &mut Cluster) {
    let tasks = placed(c, "web", "front");
    let (target, _, ip) = &tasks[0];
    let link = format!("{target}:primary");
    ok(c.shoal(&[
        "run",
        "-d",
        "--name",
        "linker",
        "--network",
        "front",
        "--network-alias",
        "lk",
        "--link",
        &link,
        "local/busybox:1",
        "sleep",
        "600",
    ]));
    // Removed however this scenario ends: the network's deletion waits for it.
    let _linker = Removed(c, "linker");
    wait_running(c, "linker");
    assert_eq!(
        resolve(c, "linker", "primary"),
        BTreeSet::from([ip.clone()]),
        "its link"
    );
    assert!(
        resolve(c, &tasks[1].0, "primary").is_empty(),
        "nobody else's"
    );
    let linker = json(c.shoal(&["get", "task", "linker", "-o", "json"]));
    let own = linker["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find_map(|a| a.as_str()?.strip_prefix("front=")))
        .unwrap_or_else(|| panic!("linker has a front address: {linker}"))
        .to_string();
    assert_eq!(
        resolve(c, &tasks[1].0, "lk"),
        BTreeSet::from([own]),
        "its alias, for all"
    );
}

/// A standalone task removed when this goes out of scope.
struct Removed<'a>(&'a Cluster, &'static str);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = self.0.shoal(&["rm", "-f", self.1]);
    }
}

/// `web` again, with a health check and a shell that stops at once on SIGTERM.
const WEB_HEALTHY: &str = "apiVersion: shoal.dev/v1
kind: Service
metadata: {name: web}
spec:
  image: local/busybox:1
  command: [sh, -c, 'trap \"exit 0\" TERM; hostname > /www/who; httpd -f -p 80 -h /www & wait']
  replicas: 2
  networks: [front]
  healthcheck: {cmd: [wget, -q, -O, /dev/null, 'http://127.0.0.1/index.html'], interval: 1s}
";

fn a_rolling_update_drops_no_connection_through_the_vip(c: &mut Cluster) {
    ok(c.shoal(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "local/busybox:1",
        "sleep",
        "600",
    ]));
    wait_running(c, "client");
    // Requests one after another through the VIP for as long as the update takes.
    let mut requests = client(&c.url)
        .args(["exec", "client", "--", "sh", "-c"])
        .arg("while true; do if wget -q -O /dev/null http://web/index.html; then echo ok; else echo FAILED; fi; done")
        .envs(client_env(&c.url))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("shoal exec");
    let lines = lines_of(&mut requests);
    std::thread::sleep(std::time::Duration::from_secs(1));
    c.apply(WEB_HEALTHY);
    ok(Command::new("timeout")
        .args([
            "90",
            env!("CARGO_BIN_EXE_shoal"),
            "rollout",
            "status",
            "service/web",
        ])
        .envs(client_env(&c.url))
        .output()
        .expect("shoal rollout status"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let _ = requests.kill();
    let _ = requests.wait();
    let seen: Vec<String> = lines.try_iter().collect();
    let failed = seen.iter().filter(|l| l.contains("FAILED")).count();
    let served = seen.iter().filter(|l| l.trim() == "ok").count();
    assert!(served > 20, "requests went through: {served}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the update",
        seen.len()
    );
    ok(c.shoal(&["rm", "-f", "client"]));
}

fn a_lost_host_loses_its_tasks_and_the_other_hosts_entries_follow(c: &mut Cluster) {
    // The host of a running task, which the others forward to.
    let before = placed(c, "web", "front");
    let lost_name = before.first().expect("a running web task").1.clone();
    let lost: usize = lost_name
        .trim_start_matches(PREFIX)
        .parse()
        .expect("host number");
    let lost_address = format!("dst {NET}.{}", lost + 1);
    let lost_task = before.first().expect("a running web task").0.clone();
    let container = tasks_of(c, "web")
        .iter()
        .find(|t| t["metadata"]["name"] == lost_task.as_str())
        .and_then(|t| t["status"]["containerId"].as_str().map(str::to_string))
        .expect("the lost task's container id");
    assert!(
        container_running(lost, &container),
        "before: {container} runs"
    );
    let others: Vec<usize> = (0..HOSTS).filter(|h| *h != lost).collect();
    assert!(
        others.iter().any(|h| c
            .overlay_entries(*h)
            .iter()
            .any(|e| e.contains(&lost_address))),
        "before: another host forwards to {lost_name}"
    );
    // The host's uplink goes down: its agent can reach nobody, nobody reaches it.
    let link = |state: &str| {
        ok(Command::new("ip")
            .args(["link", "set", &format!("{lost_name}u"), state])
            .output()
            .expect("ip link"))
    };
    link("down");
    wait(
        "the service runs all its replicas on the other hosts",
        60,
        || {
            let tasks = placed(c, "web", "front");
            tasks.len() == 2 && tasks.iter().all(|(_, n, _)| *n != lost_name)
        },
    );
    wait("no host forwards to the lost one", 10, || {
        others.iter().all(|h| {
            c.overlay_entries(*h)
                .iter()
                .all(|e| !e.contains(&lost_address))
        })
    });
    everyone_reaches_everyone(c, &placed(c, "web", "front"));
    // Cut off past the heartbeat window, the lost host's agent stopped its copy itself
    // (fencing): the slot does not run twice while the partition lasts.
    wait("the cut-off host stopped its copy", 30, || {
        !container_running(lost, &container)
    });
    // It comes back, the same agent: it is a host like any other, and its stale copy
    // stays stopped.
    link("up");
    wait("the host is ready again", 30, || {
        let nodes = json(c.shoal(&["get", "nodes", "-o", "json"]));
        nodes["items"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["status"]["state"] == "ready"))
    });
    assert!(
        !container_running(lost, &container),
        "after: {container} stays stopped"
    );
    let copies = placed(c, "web", "front");
    assert_eq!(copies.len(), 2, "one copy per slot: {copies:?}");
}

/// Whether container `id` runs on host `h` (its agent's runtime, as runc sees it).
fn container_running(h: usize, id: &str) -> bool {
    let root = format!("/tmp/shoal-cluster-{PREFIX}/{PREFIX}{h}/runtime");
    let out = Command::new("runc")
        .args(["--root", &root, "state", id])
        .output()
        .expect("runc");
    out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|s| s["status"] == "running")
}

fn a_published_port_shows_the_task_its_clients_own_address(c: &mut Cluster) {
    c.apply(
        "apiVersion: shoal.dev/v1
kind: Service
metadata: {name: pub}
spec:
  image: local/busybox:1
  command: [httpd, -f, -v, -p, '80', -h, /www]
  ports: [{target: 80, published: 8080, mode: host}]
",
    );
    wait("pub runs", 30, || {
        tasks_of(c, "pub").iter().any(|t| state(t) == "running")
    });
    let task = tasks_of(c, "pub")
        .into_iter()
        .find(|t| state(t) == "running")
        .expect("running");
    let node = task["spec"]["node"].as_str().expect("node").to_string();
    let name = task["metadata"]["name"].as_str().expect("name").to_string();
    let host: usize = node
        .trim_start_matches(PREFIX)
        .parse()
        .expect("host number");
    let _outside = Outside::start();
    let url = format!("http://{NET}.{}:8080/index.html", host + 1);
    assert_eq!(
        from_outside(&url).trim(),
        "hello from shoal",
        "from the outside: {url}"
    );
    // httpd -v logs each client's address (`[::ffff:IP]:PORT`): the outside's own, not
    // the node's.
    let client = format!(":{NET}.200]:");
    wait("the task logged the client's own address", 10, || {
        stdout(&c.shoal(&["logs", &format!("task/{name}")])).contains(&client)
    });
    // The node itself still reaches it (through the agent's proxy).
    let local = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node,
            "curl",
            "-s",
            "-m",
            "2",
            "http://127.0.0.1:8080/index.html",
        ])
        .output()
        .expect("curl");
    assert_eq!(
        stdout(&local).trim(),
        "hello from shoal",
        "from the node itself"
    );
    ok(c.shoal(&["delete", "service", "pub"]));
}

/// `curl` from the outside namespace; the page, once it answers (within 5 s).
fn from_outside(url: &str) -> String {
    let mut page = String::new();
    for _ in 0..50 {
        let out = Command::new("ip")
            .args(["netns", "exec", OUTSIDE, "curl", "-s", "-m", "2", url])
            .output()
            .expect("curl");
        page = stdout(&out);
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    page
}

fn a_port_published_through_the_mesh_answers_on_every_host_with_the_clients_address(
    c: &mut Cluster,
) {
    // One replica, so two of the three hosts run none of it.
    c.apply(
        "apiVersion: shoal.dev/v1
kind: Service
metadata: {name: mesh}
spec:
  image: local/busybox:1
  command: [httpd, -f, -v, -p, '80', -h, /www]
  ports: [{target: 80, published: 8081}]
",
    );
    wait("mesh runs", 30, || {
        tasks_of(c, "mesh").iter().any(|t| state(t) == "running")
    });
    let task = tasks_of(c, "mesh")
        .into_iter()
        .find(|t| state(t) == "running")
        .expect("running");
    let name = task["metadata"]["name"].as_str().expect("name").to_string();
    let node = task["spec"]["node"].as_str().expect("node").to_string();
    let ingress = task["status"]["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["network"] == "ingress");
    assert!(ingress, "the task joined ingress: {task}");
    let _outside = Outside::start();
    for h in 0..HOSTS {
        let url = format!("http://{NET}.{}:8081/index.html", h + 1);
        assert_eq!(
            from_outside(&url).trim(),
            "hello from shoal",
            "from the outside through host {h} (the task runs on {node})"
        );
    }
    // Each of those connections reached the task with the outside's own address.
    let client = format!(":{NET}.200]:");
    wait(
        "the task logged the client's own address for every host",
        10,
        || {
            let logs = stdout(&c.shoal(&["logs", &format!("task/{name}")]));
            logs.matches(&client).count() >= HOSTS
        },
    );
    // A host without the task answers on its own 127.0.0.1 too (the agent's proxy).
    let other = (0..HOSTS)
        .map(|h| format!("{PREFIX}{h}"))
        .find(|h| *h != node)
        .expect("another host");
    let local = Command::new("ip")
        .args(["netns", "exec", &other, "curl", "-s", "-m", "2"])
        .arg("http://127.0.0.1:8081/index.html")
        .output()
        .expect("curl");
    assert_eq!(
        stdout(&local).trim(),
        "hello from shoal",
        "from {other} itself"
    );
    ok(c.shoal(&["delete", "service", "mesh"]));
}

fn tasks_of(c: &Cluster, service: &str) -> Vec<serde_json::Value> {
    tasks_at(&c.url, service)
}

fn deleting_the_network_removes_its_devices_from_every_host(c: &mut Cluster) {
    ok(c.shoal(&["delete", "service", "web"]));
    ok(c.shoal(&["delete", "network", "front"]));
    wait("the network is gone", 60, || {
        !c.shoal(&["get", "network", "front"]).status.success()
    });
    wait("every host has only the links it had at first", 30, || {
        (0..HOSTS).all(|h| c.links(h) == c.baseline[h])
    });
    for h in 0..HOSTS {
        assert!(c.overlay_entries(h).is_empty(), "host {h}");
        assert_eq!(
            c.overlay_namespaces(h),
            Vec::<std::path::PathBuf>::new(),
            "host {h}"
        );
    }
}

fn the_hosts_serve_no_plaintext_beyond_loopback(c: &mut Cluster) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for h in 0..HOSTS {
        // All but the containers' DNS (53, on the node bridge); no service publishes
        // a port yet.
        let ports: Vec<(String, u16)> = listening_beyond_loopback(&c.on_host(h, &["ss", "-ltnH"]))
            .into_iter()
            .filter(|(_, port)| *port != 53)
            .collect();
        assert!(
            ports.contains(&(format!("{NET}.{}", h + 1), 7444)),
            "host {h}: the node API is among {ports:?}"
        );
        for (ip, port) in &ports {
            only_tls(&rt, &format!("{ip}:{port}"))
                .unwrap_or_else(|e| panic!("host {h}: {ip}:{port}: {e}"));
        }
        // The node API is the servers' alone: an admin certificate is turned away.
        let admin = credentials_for(&c.url);
        let node = format!("{PREFIX}{h}");
        let address = format!("{NET}.{}:7444", h + 1);
        let asked = rt.block_on(async {
            let channel = shoal_wire::node_channel(&address, &node, Some(&admin)).expect("channel");
            shoal_wire::pb::node_client::NodeClient::new(channel)
                .container_logs(shoal_wire::pb::ContainerLogsRequest::default())
                .await
                .map(drop)
        });
        match asked {
            Err(s) => assert_eq!(s.code(), tonic::Code::PermissionDenied, "host {h}: {s:?}"),
            Ok(()) => panic!("host {h}: the node API served an admin certificate"),
        }
    }
}

#[test]
fn overlay_networks_across_hosts() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "namespaces and containers need root: run as root (hack/test.sh does)"
    );
    let mut c = Cluster::up();
    run_scenarios(
        &mut c,
        scenarios![
            the_hosts_serve_no_plaintext_beyond_loopback,
            tasks_on_different_hosts_talk_over_the_overlay,
            tasks_find_each_other_by_name,
            the_service_name_is_its_vip_served_by_replicas_on_every_host,
            an_agent_killed_and_restarted_leaves_the_datapath_as_it_was,
            a_scaled_down_task_leaves_dns_before_its_container_stops_and_then_every_hosts_entries,
            containers_reach_the_outside_through_their_nodes_nat,
            a_run_container_joins_by_flag_and_its_link_resolves_inside_it_only,
            a_rolling_update_drops_no_connection_through_the_vip,
            a_lost_host_loses_its_tasks_and_the_other_hosts_entries_follow,
            a_published_port_shows_the_task_its_clients_own_address,
            a_port_published_through_the_mesh_answers_on_every_host_with_the_clients_address,
            deleting_the_network_removes_its_devices_from_every_host,
        ],
    );
}
