//! High availability on a real three-member etcd cluster: two `shoal server`s on it,
//! a client writing through both, and the etcd leader killed (-9) in the middle. Every
//! write the CLI acknowledged is there afterwards, writes keep landing, and the
//! controllers keep reconciling.

mod support;

use std::time::{Duration, Instant};

use shoal_testkit::EtcdCluster;
use support::*;

fn service(name: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1
kind: Service
metadata: {{name: {name}}}
spec:
  image: local/busybox:1
  replicas: 0
"
    )
}

/// Applies `name` through the servers at `url`, trying again for up to `secs` while
/// the store elects a new leader; whether it was acknowledged.
fn write(url: &str, name: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if shoal_at(url, &["apply", "-f", "-"], Some(&service(name)))
            .status
            .success()
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names_at(url: &str) -> Vec<String> {
    let list = json(shoal_at(url, &["get", "services", "-o", "json"], None));
    let mut names: Vec<String> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn losing_the_etcd_leader_loses_no_acknowledged_write() {
    let mut etcd = EtcdCluster::start(3);
    let a = Server::etcd(&etcd.addresses(), "server-a");
    let b = Server::etcd(&etcd.addresses(), "server-b");
    let both = format!("{},{}", a.url, b.url);
    let mut acked = Vec::new();
    for i in 0..30 {
        let name = format!("before-{i:02}");
        assert!(write(&both, &name, 10), "{name} before any fault");
        acked.push(name);
    }
    let leader = etcd.leader().expect("etcd reports a leader");
    etcd.kill(leader);
    // Writes go on through the two members left, each acknowledged or retried.
    for i in 0..30 {
        let name = format!("after-{i:02}");
        assert!(
            write(&both, &name, 5),
            "{name}: the cluster stopped taking writes after etcd member {leader} died"
        );
        acked.push(name);
    }
    acked.sort();
    assert_eq!(names_at(&a.url), acked, "through server-a");
    assert_eq!(names_at(&b.url), acked, "through server-b");
    // And the controllers still reconcile: a new network gets its subnet.
    ok(shoal_at(
        &both,
        &["apply", "-f", "-"],
        Some("apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: after-the-fault}\nspec: {driver: overlay}\n"),
    ));
    wait(
        "the network controller allocates after the fault",
        15,
        || {
            let net = shoal_at(
                &both,
                &["get", "network", "after-the-fault", "-o", "json"],
                None,
            );
            net.status.success() && json(net)["status"]["subnet"].is_string()
        },
    );
}
