use super::*;
use std::sync::Mutex as StdMutex;

/// The kernel as a table: networks with their peers, and connected veths.
#[derive(Default)]
struct FakeKernel {
    networks: StdMutex<BTreeMap<u32, BTreeSet<PeerEntry>>>,
    veths: StdMutex<Vec<(String, String, u32)>>,
    mtus: StdMutex<Vec<u32>>,
    tables: StdMutex<Vec<(String, String)>>,
    owned: StdMutex<Vec<(u32, Ipv4Addr, u8)>>,
    routes: StdMutex<Vec<(String, String, BTreeSet<Ipv4Addr>)>>,
}

#[async_trait]
impl OverlayOps for FakeKernel {
    async fn underlay(&self, ip: Ipv4Addr) -> Result<Option<(u32, u32)>, String> {
        Ok((ip == Ipv4Addr::new(10, 99, 0, 1)).then_some((7, 1400)))
    }
    async fn ensure_network(
        &self,
        vni: u32,
        _: Option<(Ipv4Addr, u32)>,
        mtu: u32,
    ) -> Result<(), String> {
        self.networks.lock().unwrap().entry(vni).or_default();
        self.mtus.lock().unwrap().push(mtu);
        Ok(())
    }
    async fn remove_network(&self, vni: u32) -> Result<(), String> {
        self.networks.lock().unwrap().remove(&vni);
        Ok(())
    }
    async fn networks(&self) -> Result<Vec<u32>, String> {
        Ok(self.networks.lock().unwrap().keys().copied().collect())
    }
    async fn sync_peers(&self, vni: u32, peers: &BTreeSet<PeerEntry>) -> Result<(), String> {
        let mut nets = self.networks.lock().unwrap();
        let net = nets.get_mut(&vni).ok_or("no such network")?;
        *net = peers.clone();
        Ok(())
    }
    async fn connect(
        &self,
        _: &Path,
        join: &Join,
        host_if: &str,
        ifname: &str,
        _: u32,
    ) -> Result<(), String> {
        self.veths
            .lock()
            .unwrap()
            .push((host_if.into(), ifname.into(), join.vni));
        Ok(())
    }
    async fn own_address(
        &self,
        vni: u32,
        ip: Ipv4Addr,
        prefix: u8,
        _mtu: u32,
    ) -> Result<(), String> {
        self.owned.lock().unwrap().push((vni, ip, prefix));
        Ok(())
    }
    async fn return_routes(
        &self,
        netns: &Path,
        ifname: &str,
        nodes: &BTreeSet<Ipv4Addr>,
    ) -> Result<(), String> {
        self.routes.lock().unwrap().push((
            netns.display().to_string(),
            ifname.into(),
            nodes.clone(),
        ));
        Ok(())
    }
}

#[async_trait]
impl VipOps for FakeKernel {
    async fn apply(&self, netns: &Path, script: String) -> Result<(), String> {
        self.tables
            .lock()
            .unwrap()
            .push((netns.display().to_string(), script));
        Ok(())
    }
}

fn set(networks: &[(u32, &[(&str, &str)])]) -> pb::PeerSet {
    pb::PeerSet {
        networks: networks
            .iter()
            .map(|(vni, peers)| pb::NetworkPeers {
                network: format!("n{vni}"),
                vni: *vni,
                peers: peers
                    .iter()
                    .map(|(a, n)| pb::Peer {
                        address: a.to_string(),
                        node_address: n.to_string(),
                    })
                    .collect(),
                names: Vec::new(),
                vips: Vec::new(),
            })
            .collect(),
        ingress: None,
    }
}

fn join(vni: u32, ip: &str) -> Join {
    Join {
        network: format!("n{vni}"),
        vni,
        ip: ip.parse().unwrap(),
        prefix: 24,
    }
}

#[tokio::test]
async fn the_node_follows_the_peer_set_and_keeps_what_its_containers_use() {
    let kernel = Arc::new(FakeKernel::default());
    let overlay = Overlay::new(
        kernel.clone(),
        kernel.clone(),
        Some(Ipv4Addr::new(10, 99, 0, 1)),
        None,
        None,
    );
    let asker = Ipv4Addr::new(172, 30, 0, 2);
    let got = overlay
        .attach(
            "shoal-a",
            Path::new("/nowhere"),
            asker,
            &[join(4096, "10.10.1.2")],
            &[],
        )
        .await
        .expect("attach");
    assert_eq!(got, ["n4096=10.10.1.2"]);
    assert_eq!(*kernel.mtus.lock().unwrap(), [1350], "underlay 1400 - 50");
    let veths = kernel.veths.lock().unwrap().clone();
    assert_eq!(veths, [("soshoala0".to_string(), "eth1".to_string(), 4096)]);

    // The server's first set does not list 4096 yet: the container's network stays.
    overlay
        .converge(&set(&[(4097, &[("10.10.2.3", "10.99.0.2")])]))
        .await
        .expect("converge");
    let nets = kernel.networks.lock().unwrap().clone();
    assert_eq!(nets.keys().copied().collect::<Vec<_>>(), [4096, 4097]);
    assert_eq!(nets[&4097].len(), 1);

    // Peers come and go; a network nobody here uses any more is removed.
    overlay
        .converge(&set(&[(
            4096,
            &[("10.10.1.3", "10.99.0.2"), ("10.10.1.4", "10.99.0.3")],
        )]))
        .await
        .expect("converge");
    let nets = kernel.networks.lock().unwrap().clone();
    assert_eq!(nets.keys().copied().collect::<Vec<_>>(), [4096]);
    assert_eq!(nets[&4096].len(), 2);
    overlay.detach("shoal-a").await;
    overlay.converge(&set(&[])).await.expect("converge");
    assert!(kernel.networks.lock().unwrap().is_empty(), "nothing left");
}

#[test]
fn attachments_parse_strictly_and_names_fit_the_kernel() {
    let a = |address: &str| shoal_api::Attachment {
        network: "front".into(),
        address: address.into(),
        vni: 4096,
    };
    assert_eq!(
        Join::from_attachment(&a("10.10.1.5/24")).expect("ok"),
        Join {
            network: "front".into(),
            vni: 4096,
            ip: Ipv4Addr::new(10, 10, 1, 5),
            prefix: 24
        }
    );
    for bad in ["10.10.1.5", "10.10.1.5/33", "x/24"] {
        assert!(Join::from_attachment(&a(bad)).is_err(), "{bad}");
    }
    assert!(
        host_if("shoal-0123456789abcdef", 9).len() < 15,
        "room for the p"
    );
    assert!(bridge_name(16_777_215).len() <= 15);
    assert_eq!(mac_of(Ipv4Addr::new(10, 0, 0, 1)), [2, 0x42, 10, 0, 0, 1]);
}

#[tokio::test]
async fn a_containers_vip_table_is_written_when_its_vips_change_and_only_then() {
    let kernel = Arc::new(FakeKernel::default());
    let overlay = Overlay::new(kernel.clone(), kernel.clone(), None, None, None);
    let asker = Ipv4Addr::new(172, 30, 0, 2);
    overlay
        .attach(
            "shoal-a",
            Path::new("/ns/a"),
            asker,
            &[join(4096, "10.10.1.2")],
            &[],
        )
        .await
        .expect("attach");
    assert_eq!(kernel.tables.lock().unwrap().len(), 1, "written at attach");
    let with_vip = |backends: &[&str]| {
        let mut s = set(&[(4096, &[])]);
        s.networks[0].vips.push(pb::Vip {
            service: "web".into(),
            address: "10.10.1.9".into(),
            backends: backends.iter().map(|b| b.to_string()).collect(),
        });
        s
    };
    overlay
        .converge(&with_vip(&["10.10.1.3"]))
        .await
        .expect("converge");
    overlay
        .converge(&with_vip(&["10.10.1.3"]))
        .await
        .expect("converge");
    let tables = kernel.tables.lock().unwrap().clone();
    assert_eq!(tables.len(), 2, "the same VIPs again write nothing");
    assert!(
        tables[1].1.contains("10.10.1.9 : jump svc0"),
        "{}",
        tables[1].1
    );
    overlay
        .converge(&with_vip(&["10.10.1.4", "10.10.1.3"]))
        .await
        .expect("converge");
    let tables = kernel.tables.lock().unwrap().clone();
    assert_eq!(tables.len(), 3);
    assert!(
        tables[2].1.contains("0 : 10.10.1.3, 1 : 10.10.1.4"),
        "sorted: {}",
        tables[2].1
    );
}

#[tokio::test]
async fn on_the_mesh_the_node_owns_its_address_and_containers_route_replies_back() {
    let kernel = Arc::new(FakeKernel::default());
    let ports = PortTable::default();
    let overlay = Overlay::new(
        kernel.clone(),
        kernel.clone(),
        None,
        None,
        Some(ports.clone()),
    );
    let ingress = Join {
        network: shoal_api::INGRESS_NETWORK.into(),
        ..join(4100, "10.0.0.9")
    };
    overlay
        .attach(
            "shoal-a",
            Path::new("/ns/a"),
            Ipv4Addr::new(172, 30, 0, 2),
            &[join(4096, "10.10.1.2"), ingress],
            &[],
        )
        .await
        .expect("attach");
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let published = free.local_addr().expect("addr").port();
    drop(free);
    let mesh = |nodes: &[&str]| {
        let mut s = set(&[(4100, &[])]);
        s.ingress = Some(pb::Ingress {
            network: shoal_api::INGRESS_NETWORK.into(),
            vni: 4100,
            address: "10.0.0.2/24".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ports: vec![pb::MeshPort {
                published: published.into(),
                protocol: "tcp".into(),
                service: "web".into(),
                target: 80,
                backends: vec!["10.0.0.9".into()],
            }],
        });
        s
    };
    overlay
        .converge(&mesh(&["10.0.0.2", "10.0.0.3"]))
        .await
        .expect("converge");
    overlay
        .converge(&mesh(&["10.0.0.2", "10.0.0.3"]))
        .await
        .expect("converge");
    assert_eq!(
        *kernel.owned.lock().unwrap(),
        [(4100, Ipv4Addr::new(10, 0, 0, 2), 24)],
        "its address, written once"
    );
    let routes = kernel.routes.lock().unwrap().clone();
    assert_eq!(
        routes.len(),
        2,
        "at attach (no mesh yet) and once the mesh came"
    );
    assert_eq!(routes[1].1, "eth2", "the second network's interface");
    assert_eq!(routes[1].2.len(), 2);
    let tables = kernel.tables.lock().unwrap().clone();
    assert!(
        tables[0]
            .1
            .contains("iifname \"eth2\" ct state new ct mark set @ll,64,32"),
        "{}",
        tables[0].1
    );
    overlay
        .converge(&mesh(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]))
        .await
        .expect("converge");
    let routes = kernel.routes.lock().unwrap().clone();
    assert_eq!(routes.len(), 3, "a node joined");
    assert!(
        ports.serves((published, shoal_api::Protocol::Tcp)).await,
        "the mesh's port answers here"
    );
    overlay.converge(&set(&[])).await.expect("converge");
    assert!(
        !ports.serves((published, shoal_api::Protocol::Tcp)).await,
        "and goes with the mesh"
    );
}
