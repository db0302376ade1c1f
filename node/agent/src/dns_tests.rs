use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::Name;
use proptest::prelude::*;

const ASKER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);

fn on(networks: &[&str]) -> Asker {
    Asker {
        networks: networks.iter().map(|n| n.to_string()).collect(),
        links: HashMap::new(),
    }
}

fn names(network: &str, names: &[(&str, &[&str])]) -> pb::NetworkPeers {
    pb::NetworkPeers {
        network: network.into(),
        vni: 4096,
        peers: Vec::new(),
        names: names
            .iter()
            .map(|(n, ips)| pb::DnsName {
                name: n.to_string(),
                addresses: ips.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
        vips: Vec::new(),
    }
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    m.to_vec().unwrap()
}

fn addresses(reply: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
    let m = Message::from_vec(reply).expect("a DNS reply");
    assert_eq!(m.metadata.id, 4242, "the query's id");
    let ips = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    (m.metadata.response_code, ips)
}

fn resolver(upstreams: Vec<SocketAddr>) -> Arc<Dns> {
    let dns = Dns::new(upstreams, (Ipv4Addr::new(172, 30, 0, 0), 16));
    dns.set_names(&pb::PeerSet {
        networks: vec![
            names(
                "front",
                &[
                    ("web", &["10.10.1.3", "10.10.1.4"]),
                    ("web.1", &["10.10.1.3"]),
                ],
            ),
            names("back", &[("db", &["10.10.2.3"])]),
        ],
        ingress: None,
    });
    dns
}

#[tokio::test]
async fn names_answer_only_on_the_networks_the_asker_joins() {
    let dns = resolver(Vec::new());
    dns.register(ASKER, on(&["front"]));
    let reply = dns.reply(ASKER, &query("WEB.", RecordType::A), false).await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (
            ResponseCode::NoError,
            vec![Ipv4Addr::new(10, 10, 1, 3), Ipv4Addr::new(10, 10, 1, 4)]
        ),
        "case does not matter"
    );
    // `db` is on back, which this container does not join: not ours, and with no
    // upstream the answer is SERVFAIL rather than a made-up address.
    let reply = dns.reply(ASKER, &query("db", RecordType::A), false).await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (ResponseCode::ServFail, vec![])
    );
    // Under the cluster's domain too; an unknown name there is NXDOMAIN, not asked
    // of anyone else.
    let reply = dns
        .reply(ASKER, &query("web.1.shoal.internal.", RecordType::A), false)
        .await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (ResponseCode::NoError, vec![Ipv4Addr::new(10, 10, 1, 3)])
    );
    let reply = dns
        .reply(ASKER, &query("db.shoal.internal", RecordType::A), false)
        .await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (ResponseCode::NXDomain, vec![])
    );
    // AAAA of a cluster name: ours, with no records (no IPv6 on overlays).
    let reply = dns
        .reply(ASKER, &query("web.1", RecordType::AAAA), false)
        .await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (ResponseCode::NoError, vec![])
    );
}

#[tokio::test]
async fn other_names_go_to_the_upstream_resolver() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 512];
        let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
        let q = Message::from_vec(&buf[..n]).unwrap();
        let mut r = Message::response(q.metadata.id, OpCode::Query);
        r.add_query(q.queries[0].clone());
        r.add_answer(Record::from_rdata(
            q.queries[0].name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
        ));
        upstream.send_to(&r.to_vec().unwrap(), from).await.unwrap();
    });
    let dns = resolver(vec![at]);
    dns.register(ASKER, on(&["front"]));
    let reply = dns
        .reply(ASKER, &query("example.test.", RecordType::A), false)
        .await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (ResponseCode::NoError, vec![Ipv4Addr::new(192, 0, 2, 7)])
    );
}

#[test]
fn upstreams_come_from_resolv_conf() {
    let conf = "# comment\nnameserver 10.0.0.53\nsearch example\nnameserver ::1\noptions ndots:2\n";
    assert_eq!(
        upstreams_of(conf),
        ["10.0.0.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
    );
}

proptest! {
    /// Whatever arrives on port 53, the resolver answers or stays silent; it never panics.
    #[test]
    fn any_bytes_get_an_answer_or_none(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dns = resolver(Vec::new());
        dns.register(ASKER, on(&["front"]));
        if let Some(reply) = rt.block_on(dns.reply(ASKER, &bytes, false)) {
            prop_assert!(Message::from_vec(&reply).is_ok());
        }
    }
}

#[tokio::test]
async fn a_link_alias_resolves_to_its_task_for_the_linking_container_only() {
    let dns = resolver(Vec::new());
    let mut who = on(&["front"]);
    who.links.insert("primary".into(), "web.1".into());
    dns.register(ASKER, who);
    let other = Ipv4Addr::new(172, 30, 0, 3);
    dns.register(other, on(&["front"]));
    let reply = dns
        .reply(ASKER, &query("primary", RecordType::A), false)
        .await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (ResponseCode::NoError, vec![Ipv4Addr::new(10, 10, 1, 3)])
    );
    let reply = dns
        .reply(
            other,
            &query("primary.shoal.internal", RecordType::A),
            false,
        )
        .await;
    assert_eq!(
        addresses(&reply.expect("answered")),
        (ResponseCode::NXDomain, vec![])
    );
}

#[tokio::test]
async fn nobody_beyond_the_node_bridge_gets_an_answer() {
    let dns = resolver(Vec::new());
    let stranger = Ipv4Addr::new(192, 0, 2, 1);
    dns.register(stranger, on(&["front"]));
    assert!(dns
        .reply(stranger, &query("web", RecordType::A), false)
        .await
        .is_none());
}
