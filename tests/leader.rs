//! Two servers on one etcd: one runs the controllers; when it is killed with -9, the
//! other takes over once the dead leader's lease expires.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn leader_seen_by(server: &Server) -> Option<String> {
    let o = server.shoal(&["version"]);
    if !o.status.success() {
        return None;
    }
    stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("controller leader: "))
        .filter(|l| *l != "<none>")
        .map(str::to_string)
}

/// Servers `PREFIX-a`, which leads, and `PREFIX-b`, started once `a` leads.
fn leader_and_standby(etcd: &Etcd, prefix: &str) -> (Server, Server) {
    let leader = format!("{prefix}-a");
    let first = Server::etcd(&etcd.address(), &leader);
    eventually(Duration::from_secs(20), || {
        leader_seen_by(&first).filter(|l| *l == leader)
    })
    .expect("leader");
    let second = Server::etcd(&etcd.address(), &format!("{prefix}-b"));
    (first, second)
}

#[test]
fn a_standby_server_takes_over_when_the_leader_dies() {
    let etcd = Etcd::start();
    let mut first = Server::etcd(&etcd.address(), "server-a");
    let leader = eventually(Duration::from_secs(20), || leader_seen_by(&first))
        .expect("a leader is elected");
    assert_eq!(leader, "server-a");
    let second = Server::etcd(&etcd.address(), "server-b");
    // The second server serves the API but does not lead.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(leader_seen_by(&second).as_deref(), Some("server-a"));

    // Both servers share the data.
    ok(first.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: shared}\nspec: {}\n",
    ));
    ok(second.shoal(&["get", "network", "shared"]));
    // A watch on the standby carries on across the leader change.
    let mut watch = second.spawn_shoal(&["get", "networks", "-w", "-o", "name"]);
    let lines = lines_of(&mut watch);

    let killed = Instant::now();
    first.kill();
    let new_leader = eventually(Duration::from_secs(30), || {
        leader_seen_by(&second).filter(|l| l == "server-b")
    });
    let took = killed.elapsed();
    eprintln!("leader takeover after kill -9: {:.1}s", took.as_secs_f64());
    assert_eq!(
        new_leader.as_deref(),
        Some("server-b"),
        "the standby never took over"
    );
    ok(second.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: after}\nspec: {}\n",
    ));
    // The new leader reconciles: the network made after the kill gets its subnet.
    wait("the new leader's network controller allocates", 15, || {
        let net = second.shoal(&["get", "network", "after", "-o", "json"]);
        net.status.success() && json(net)["status"]["subnet"].is_string()
    });
    let mut seen = Vec::new();
    read_until(&lines, &mut seen, |l| l == "network/after added");
    assert_eq!(
        seen.iter().filter(|l| *l == "network/shared added").count(),
        1,
        "{seen:?}"
    );
    drop(watch);
}

#[test]
fn a_leader_that_stops_cleanly_hands_over_at_once() {
    let etcd = Etcd::start();
    let (mut first, second) = leader_and_standby(&etcd, "clean");
    first.stop();
    let new_leader = eventually(Duration::from_secs(30), || {
        leader_seen_by(&second).filter(|l| l == "clean-b")
    });
    assert_eq!(new_leader.as_deref(), Some("clean-b"));
}

/// A client given both servers (`--server A,B`) follows the one that answers: a watch
/// through the leader carries on through the standby when the leader is killed, with
/// nothing printed twice, and one-off commands go to whichever server is up.
#[test]
fn a_client_given_both_servers_fails_over_when_its_server_dies() {
    let etcd = Etcd::start();
    let (mut first, second) = leader_and_standby(&etcd, "both");
    let both = format!("{},{}", first.url, second.url);
    let network = |name: &str| {
        format!("apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {{name: {name}}}\nspec: {{}}\n")
    };
    ok(shoal_at(
        &both,
        &["apply", "-f", "-"],
        Some(&network("before")),
    ));
    let mut watch = spawn_shoal_at(&both, &["get", "networks", "-w", "-o", "name"]);
    let lines = lines_of(&mut watch);
    let mut seen = Vec::new();
    read_until(&lines, &mut seen, |l| l == "network/before added");

    first.kill();
    let version = ok(shoal_at(&both, &["version"], None));
    assert!(
        version.contains("(both-b)"),
        "served by the standby: {version}"
    );
    ok(shoal_at(
        &both,
        &["apply", "-f", "-"],
        Some(&network("after")),
    ));
    read_until(&lines, &mut seen, |l| l == "network/after added");
    assert_eq!(
        seen.iter().filter(|l| *l == "network/before added").count(),
        1,
        "nothing twice: {seen:?}"
    );
    let new_leader = eventually(Duration::from_secs(30), || {
        leader_seen_by(&second).filter(|l| l == "both-b")
    });
    assert_eq!(
        new_leader.as_deref(),
        Some("both-b"),
        "the standby took over"
    );
    drop(watch);
}

/// Nodes given both servers (`shoal sim --server A,B`, as agents take them) move to
/// the standby when theirs dies: they stay up, their tasks are not replaced, and the
/// new leader's assignments reach them.
#[test]
fn nodes_given_both_servers_move_to_the_other_when_theirs_dies() {
    let etcd = Etcd::start();
    let (mut first, second) = leader_and_standby(&etcd, "nodes");
    let both = format!("{},{}", first.url, second.url);
    let _sim = client(&both)
        .args(["sim", "--nodes", "2", "--prefix", "ha"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Spawned)
        .expect("shoal sim");
    let service = |replicas: u32| {
        format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{image: web:1, replicas: {replicas}}}\n")
    };
    ok(shoal_at(&both, &["apply", "-f", "-"], Some(&service(2))));
    let running = |url: &str| -> Vec<String> {
        tasks_at(url, "web")
            .iter()
            .filter(|t| is_live(t) && state(t) == "running")
            .filter_map(|t| t["metadata"]["uid"].as_str().map(str::to_string))
            .collect()
    };
    wait("two tasks running", 30, || running(&both).len() == 2);
    let before = running(&both);

    first.kill();
    // Past the heartbeat window (3 missed 1 s heartbeats and a second's grace) and
    // the old leader's lease.
    std::thread::sleep(Duration::from_secs(8));
    let nodes = json(shoal_at(&second.url, &["get", "nodes", "-o", "json"], None));
    for n in nodes["items"].as_array().into_iter().flatten() {
        assert_eq!(n["status"]["state"], "ready", "{n}");
    }
    let after = running(&second.url);
    for uid in &before {
        assert!(after.contains(uid), "task {uid} replaced: {after:?}");
    }
    ok(shoal_at(
        &second.url,
        &["apply", "-f", "-"],
        Some(&service(4)),
    ));
    wait("four tasks running, placed by the new leader", 30, || {
        running(&second.url).len() == 4
    });
}
