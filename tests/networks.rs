//! Network allocation as a user sees it, through the CLI, on simulated nodes: subnets,
//! gateways and VXLAN ids, a VIP per service and an address per task (and per node on
//! `ingress`), shown by `shoal network ls|inspect`; exhaustion said loudly; addresses released as tasks go
//! and kept across a server crash; unknown networks refused; a network in use kept
//! until nothing uses it.

mod support;

use std::collections::BTreeSet;

use support::*;

struct Fixture {
    server: Server,
    _data: tempfile::TempDir,
    _sim: Sim,
}

fn network(name: &str, subnet: Option<&str>) -> String {
    let spec = subnet.map_or("{}".to_string(), |s| format!("{{subnet: {s}}}"));
    format!("apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

fn service(name: &str, replicas: u32, networks: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{image: local/busybox:1, replicas: {replicas}, networks: {networks}}}\n"
    )
}

/// `network inspect NAME -o json`.
fn inspect(f: &Fixture, name: &str) -> serde_json::Value {
    json(f.server.shoal(&["network", "inspect", name, "-o", "json"]))
}

/// The network's Ready condition has `field == value` and a message that says `part`.
fn ready_says(f: &Fixture, name: &str, field: &str, value: &str, part: &str) -> bool {
    let ready = &inspect(f, name)["conditions"][0];
    ready[field] == value && ready["message"].as_str().is_some_and(|m| m.contains(part))
}

/// The live tasks of `service` and their address on `net` (None: none yet).
fn addresses(f: &Fixture, service: &str, net: &str) -> Vec<(String, Option<String>)> {
    tasks(&f.server, service)
        .into_iter()
        .filter(|t| is_live(t) && !matches!(state(t), "shutdown" | "complete" | "failed"))
        .map(|t| {
            let address = t["status"]["attachments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["network"] == net)
                .and_then(|a| a["address"].as_str().map(str::to_string));
            (
                t["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                address,
            )
        })
        .collect()
}

fn all_addressed(f: &Fixture, service: &str, net: &str, n: usize) -> bool {
    let a = addresses(f, service, net);
    a.len() == n && a.iter().all(|(_, ip)| ip.is_some())
}

fn tasks_get_addresses_and_services_a_vip(f: &mut Fixture) {
    apply(
        &f.server,
        &(network("front", Some("10.10.1.0/24"))
            + "---\n"
            + &network("back", None)
            + "---\n"
            + &service("api", 3, "[front, {name: back, aliases: [db]}]")),
    );
    wait("three tasks with an address on front and back", 20, || {
        all_addressed(f, "api", "front", 3) && all_addressed(f, "api", "back", 3)
    });
    let front: BTreeSet<String> = addresses(f, "api", "front")
        .into_iter()
        .filter_map(|(_, a)| a)
        .collect();
    assert_eq!(front.len(), 3, "three different addresses: {front:?}");
    assert!(
        front
            .iter()
            .all(|a| a.starts_with("10.10.1.") && a.ends_with("/24")),
        "{front:?}"
    );
    let shown = inspect(f, "front");
    assert_eq!(shown["subnet"], "10.10.1.0/24");
    assert_eq!(shown["gateway"], "10.10.1.1");
    assert!(shown["vni"].as_u64().is_some_and(|v| v >= 4096), "{shown}");
    assert_eq!(shown["services"][0]["name"], "api");
    let vip = shown["services"][0]["vip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        vip.starts_with("10.10.1.") && !front.contains(&format!("{vip}/24")),
        "VIP {vip}"
    );
    assert_eq!(shown["tasks"].as_array().map(Vec::len), Some(3), "{shown}");
    assert_eq!(
        shown["addressesInUse"], 5,
        "gateway, VIP, three tasks: {shown}"
    );
    // `back` got a subnet from the default pool, and its own VXLAN id.
    let back = inspect(f, "back");
    assert!(
        back["subnet"]
            .as_str()
            .is_some_and(|s| s.starts_with("10.") && s.ends_with("/24")),
        "{back}"
    );
    assert_ne!(back["vni"], shown["vni"]);
    assert_ne!(
        back["subnet"],
        inspect(f, "ingress")["subnet"],
        "ingress has its own"
    );
    let ls = ok(f.server.shoal(&["network", "ls"]));
    assert!(
        ls.lines().any(|l| l.starts_with("front ")
            && l.contains("10.10.1.0/24")
            && l.contains("10.10.1.1")
            && l.contains("5/254")),
        "{ls}"
    );
}

fn every_node_has_an_ingress_address_and_mesh_publishers_join_ingress(f: &mut Fixture) {
    apply(
        &f.server,
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: pub}\nspec: {image: local/busybox:1, replicas: 2, ports: [{target: 80, published: 8080}]}\n",
    );
    wait("both tasks have an address on ingress", 20, || {
        all_addressed(f, "pub", "ingress", 2)
    });
    let shown = inspect(f, "ingress");
    let nodes: BTreeSet<String> = shown["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["address"].as_str().map(str::to_string))
        .collect();
    assert_eq!(nodes.len(), 2, "one address per node: {shown}");
    let tasks: BTreeSet<String> = addresses(f, "pub", "ingress")
        .into_iter()
        .filter_map(|(_, a)| a)
        .collect();
    assert!(nodes.is_disjoint(&tasks), "{nodes:?} {tasks:?}");
    assert_eq!(shown["services"][0]["name"], "pub", "{shown}");
    let text = ok(f.server.shoal(&["network", "inspect", "ingress"]));
    assert!(text.contains("Nodes:"), "{text}");
    ok(f.server.shoal(&["delete", "service", "pub"]));
}

fn a_full_network_says_so_and_its_waiting_tasks_do_not_start(f: &mut Fixture) {
    apply(
        &f.server,
        &(network("tiny", Some("10.10.9.0/29")) + "---\n" + &service("crowd", 7, "[tiny]")),
    );
    // Six hosts: the gateway, the VIP and four tasks.
    wait("four of seven tasks addressed", 20, || {
        addresses(f, "crowd", "tiny")
            .iter()
            .filter(|(_, a)| a.is_some())
            .count()
            == 4
    });
    let says = "network tiny has no free address (6 of 6 in use)";
    wait("the three others say why", 10, || {
        let waiting: Vec<serde_json::Value> = tasks(&f.server, "crowd")
            .into_iter()
            .filter(|t| t["status"]["attachments"].is_null())
            .collect();
        waiting.len() == 3
            && waiting.iter().all(|t| {
                t["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(says))
                    && !matches!(state(t), "running" | "starting" | "preparing")
            })
    });
    let shown = inspect(f, "tiny");
    let ready = &shown["conditions"][0];
    assert_eq!(ready["status"], "False", "{shown}");
    assert_eq!(ready["reason"], "AddressesExhausted", "{shown}");
    let warnings: Vec<serde_json::Value> = events_for(&f.server, "network/tiny")
        .into_iter()
        .filter(|e| e["reason"] == "AddressesExhausted")
        .collect();
    assert_eq!(warnings.len(), 1, "one Warning: {warnings:?}");
    // Fewer replicas: everyone left has an address, and the network is Ready again.
    ok(f.server.shoal(&["scale", "service/crowd=3"]));
    wait("three addressed and Ready again", 20, || {
        all_addressed(f, "crowd", "tiny", 3)
            && inspect(f, "tiny")["conditions"][0]["status"] == "True"
    });
    wait("the released addresses are free again", 10, || {
        inspect(f, "tiny")["addressesInUse"] == 5
    });
}

fn addresses_are_kept_across_a_server_crash_and_never_given_twice(f: &mut Fixture) {
    wait("api addressed", 20, || all_addressed(f, "api", "front", 3));
    let before = addresses(f, "api", "front");
    f.server.crash_and_restart();
    ok(f.server.shoal(&["scale", "service/api=6"]));
    wait("six addressed after the crash", 30, || {
        all_addressed(f, "api", "front", 6)
    });
    let after = addresses(f, "api", "front");
    for task in &before {
        assert!(after.contains(task), "{task:?} kept its address: {after:?}");
    }
    let distinct: BTreeSet<&Option<String>> = after.iter().map(|(_, a)| a).collect();
    assert_eq!(distinct.len(), 6, "no address twice: {after:?}");
    ok(f.server.shoal(&["scale", "service/api=3"]));
    wait("released on scale down", 20, || {
        inspect(f, "front")["addressesInUse"] == 5
    });
}

fn an_unknown_network_is_refused_at_apply(f: &mut Fixture) {
    let o = f
        .server
        .shoal_stdin(&["apply", "-f", "-"], &service("lost", 1, "[nowhere]"));
    refused(o, "spec.networks[0]: network \"nowhere\" does not exist");
    let o = f.server.shoal(&["get", "service", "lost"]);
    assert!(!o.status.success(), "nothing written");
}

fn a_network_in_use_goes_only_once_nothing_uses_it(f: &mut Fixture) {
    apply(
        &f.server,
        &(network("brief", Some("10.10.7.0/24")) + "---\n" + &service("user", 2, "[brief]")),
    );
    wait("user addressed", 20, || {
        all_addressed(f, "user", "brief", 2)
    });
    ok(f.server.shoal(&["delete", "network", "brief"]));
    wait("the network says it is in use", 10, || {
        ready_says(f, "brief", "reason", "InUse", "service/user")
    });
    ok(f.server.shoal(&["delete", "service", "user"]));
    wait("the network is gone", 30, || {
        !f.server
            .shoal(&["get", "network", "brief"])
            .status
            .success()
    });
    // Its subnet is free again: a new network takes it and is Ready.
    apply(&f.server, &network("again", Some("10.10.7.0/24")));
    wait("the subnet is reused", 10, || {
        inspect(f, "again")["conditions"][0]["status"] == "True"
    });
}

fn overlapping_subnets_are_refused_with_the_other_network_named(f: &mut Fixture) {
    apply(&f.server, &network("overlap", Some("10.10.0.0/16")));
    wait("the overlap is said", 10, || {
        ready_says(f, "overlap", "status", "False", "of network front")
    });
}

#[test]
fn networks_allocate_addresses_users_can_see() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(data.path());
    let sim = server.sim(&["--nodes", "2"]);
    let mut f = Fixture {
        server,
        _data: data,
        _sim: sim,
    };
    run_scenarios(
        &mut f,
        scenarios![
            tasks_get_addresses_and_services_a_vip,
            every_node_has_an_ingress_address_and_mesh_publishers_join_ingress,
            a_full_network_says_so_and_its_waiting_tasks_do_not_start,
            addresses_are_kept_across_a_server_crash_and_never_given_twice,
            an_unknown_network_is_refused_at_apply,
            a_network_in_use_goes_only_once_nothing_uses_it,
            overlapping_subnets_are_refused_with_the_other_network_named,
        ],
    );
}
