use super::*;

fn task(node: &str, net: &str, vni: u32, ip: &str) -> Endpoint {
    Endpoint {
        node: node.into(),
        name: format!("web.{node}"),
        service: Some("web".into()),
        serving: true,
        attachments: vec![Joined {
            network: net.into(),
            vni,
            ip: ip.into(),
            aliases: vec!["www".into()],
        }],
        mesh_ports: Vec::new(),
    }
}

#[test]
fn a_node_sees_only_its_networks_and_the_other_nodes_tasks_on_them() {
    let mut t = Table::default();
    t.nodes.insert("a".into(), "10.99.0.1".into());
    t.nodes.insert("b".into(), "10.99.0.2".into());
    t.nodes.insert("c".into(), "10.99.0.3".into());
    t.tasks
        .insert("a1".into(), task("a", "front", 4096, "10.10.1.2"));
    t.tasks
        .insert("b1".into(), task("b", "front", 4096, "10.10.1.3"));
    t.tasks
        .insert("c1".into(), task("c", "back", 4097, "10.10.2.2"));
    let view = t.view("a");
    assert_eq!(view.networks.len(), 1, "only front: {view:?}");
    let front = &view.networks[0];
    assert_eq!((front.network.as_str(), front.vni), ("front", 4096));
    let peers: Vec<(&str, &str)> = front
        .peers
        .iter()
        .map(|p| (p.address.as_str(), p.node_address.as_str()))
        .collect();
    assert_eq!(peers, [("10.10.1.3", "10.99.0.2")], "not its own task");
    let names: Vec<(&str, Vec<&str>)> = front
        .names
        .iter()
        .map(|n| {
            (
                n.name.as_str(),
                n.addresses.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("tasks.web", vec!["10.10.1.2", "10.10.1.3"]),
            ("web", vec!["10.10.1.2", "10.10.1.3"]),
            ("web.a", vec!["10.10.1.2"]),
            ("web.b", vec!["10.10.1.3"]),
            ("www", vec!["10.10.1.2", "10.10.1.3"]),
        ],
        "its own task's names too; nothing of back"
    );
    assert!(t.view("nobody").networks.is_empty());
}

#[test]
fn a_service_name_is_its_vip_balanced_over_its_serving_tasks() {
    let mut t = Table::default();
    t.nodes.insert("b".into(), "10.99.0.2".into());
    t.networks.insert(
        "front".into(),
        NetworkInfo {
            vni: 4096,
            vips: [("web".to_string(), "10.10.1.9".to_string())].into(),
            ..NetworkInfo::default()
        },
    );
    t.tasks
        .insert("a1".into(), task("a", "front", 4096, "10.10.1.2"));
    t.tasks
        .insert("b1".into(), task("b", "front", 4096, "10.10.1.3"));
    let view = t.view("a");
    let front = &view.networks[0];
    let name = |n: &str| {
        front
            .names
            .iter()
            .find(|d| d.name == n)
            .map(|d| d.addresses.clone())
            .unwrap_or_default()
    };
    assert_eq!(name("web"), ["10.10.1.9"]);
    assert_eq!(
        name("www"),
        ["10.10.1.9"],
        "a service's alias is its VIP too"
    );
    assert_eq!(name("tasks.web"), ["10.10.1.2", "10.10.1.3"]);
    assert_eq!(front.vips.len(), 1);
    assert_eq!(front.vips[0].address, "10.10.1.9");
    assert_eq!(front.vips[0].backends, ["10.10.1.2", "10.10.1.3"]);
}

#[test]
fn a_task_that_stops_serving_leaves_dns_but_stays_a_peer() {
    let mut t = Table::default();
    t.nodes.insert("b".into(), "10.99.0.2".into());
    t.tasks
        .insert("a1".into(), task("a", "front", 4096, "10.10.1.2"));
    let mut leaving = task("b", "front", 4096, "10.10.1.3");
    leaving.serving = false;
    t.tasks.insert("b1".into(), leaving);
    let view = t.view("a");
    let front = &view.networks[0];
    assert_eq!(front.peers.len(), 1, "still a peer while it stops");
    assert!(
        front
            .names
            .iter()
            .all(|n| !n.addresses.contains(&"10.10.1.3".to_string())),
        "{:?}",
        front.names
    );
}

#[test]
fn ended_and_unbound_tasks_are_no_peers() {
    let json = |state: &str, node: &str| {
        format!(
            r#"{{"spec":{{"node":"{node}"}},"status":{{"state":"{state}","attachments":[{{"network":"front","address":"10.10.1.2/24","vni":4096}}]}}}}"#
        )
    };
    assert!(endpoint(json("running", "a").as_bytes()).is_some_and(|e| e.serving));
    assert!(endpoint(json("starting", "a").as_bytes()).is_some_and(|e| !e.serving));
    assert!(endpoint(json("starting", "a").as_bytes()).is_some());
    assert!(endpoint(json("failed", "a").as_bytes()).is_none());
    assert!(endpoint(json("running", "").as_bytes()).is_none());
    assert_eq!(
        node_ip(br#"{"status":{"address":"10.99.0.2:7444"}}"#).as_deref(),
        Some("10.99.0.2")
    );
}

/// Three nodes with addresses on `ingress`; `web` publishes 8080 → 80 through the mesh
/// with one task on b.
fn mesh() -> Table {
    let mut t = Table::default();
    for (n, ip) in [("a", 1), ("b", 2), ("c", 3)] {
        t.nodes.insert(n.into(), format!("10.99.0.{ip}"));
    }
    t.networks.insert(
        INGRESS.into(),
        NetworkInfo {
            vni: 4100,
            nodes: [("a", 2), ("b", 3), ("c", 4)]
                .into_iter()
                .map(|(n, ip)| (n.to_string(), format!("10.0.0.{ip}/24")))
                .collect(),
            ..NetworkInfo::default()
        },
    );
    let mut web = task("b", INGRESS, 4100, "10.0.0.9");
    web.mesh_ports = vec![(8080, shoal_api::Protocol::Tcp, 80)];
    t.tasks.insert("b1".into(), web);
    t
}

#[test]
fn every_node_gets_the_mesh_with_the_serving_tasks_on_any_node() {
    let t = mesh();
    let view = t.view("a");
    let ingress = view.ingress.expect("a has the mesh though it runs no task");
    assert_eq!(ingress.address, "10.0.0.2/24");
    assert_eq!(ingress.nodes, ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    assert_eq!(ingress.ports.len(), 1);
    let port = &ingress.ports[0];
    assert_eq!(
        (port.published, port.protocol.as_str(), port.target),
        (8080, "tcp", 80)
    );
    assert_eq!(port.backends, ["10.0.0.9"]);
    let net = &view.networks[0];
    assert_eq!(net.network, INGRESS);
    let peers: Vec<(&str, &str)> = net
        .peers
        .iter()
        .map(|p| (p.address.as_str(), p.node_address.as_str()))
        .collect();
    assert_eq!(
        peers,
        [
            ("10.0.0.3", "10.99.0.2"),
            ("10.0.0.4", "10.99.0.3"),
            ("10.0.0.9", "10.99.0.2"),
        ],
        "the other nodes and the task, not itself"
    );
    assert!(net.names.is_empty(), "no service discovery on ingress");
}

#[test]
fn the_mesh_is_absent_without_a_published_port_or_a_node_address() {
    let mut t = mesh();
    assert!(t.view("d").ingress.is_none(), "d has no address on ingress");
    let mut unserved = t.tasks["b1"].clone();
    unserved.serving = false;
    t.tasks.insert("b1".into(), unserved);
    let ingress = t.view("a").ingress.expect("still published");
    assert!(ingress.ports[0].backends.is_empty(), "no serving task");
    t.tasks.remove("b1");
    let view = t.view("a");
    assert!(view.ingress.is_none(), "nothing publishes through the mesh");
    assert!(
        view.networks.is_empty(),
        "and the node needs no ingress devices"
    );
}
