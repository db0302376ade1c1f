use super::*;
use std::sync::Mutex as StdMutex;

/// The kernel as a table: networks with their peers, and connected veths.
#[derive(Default)]
struct FakeKernel {
    networks: StdMutex<BTreeMap<u32, BTreeSet<PeerEntry>>>,
    veths: StdMutex<Vec<(String, String, u32)>>,
    mtus: StdMutex<Vec<u32>>,
    tables: StdMutex<Vec<(String, String)>>,
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
    let overlay = Overlay::new(kernel.clone(), kernel.clone(), None, None);
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
