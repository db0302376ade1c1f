use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn port(target: u16, published: u16, mode: PublishMode) -> PortSpec {
    PortSpec {
        target,
        published: Some(published),
        protocol: Protocol::Tcp,
        mode,
    }
}

/// A backend that answers each connection with its name.
async fn backend(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let p = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    p
}

async fn ask(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[tokio::test]
async fn udp_datagrams_reach_the_container_and_replies_come_back() {
    let backend = UdpSocket::bind("127.0.0.1:0").await.expect("backend");
    let target = backend.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = backend.recv_from(&mut buf).await {
            let reply = [b"echo ", &buf[..n]].concat();
            let _ = backend.send_to(&reply, from).await;
        }
    });
    let probe = UdpSocket::bind("127.0.0.1:0").await.expect("probe");
    let published = probe.local_addr().expect("addr").port();
    drop(probe);
    let spec = PortSpec {
        protocol: Protocol::Udp,
        ..port(target, published, PublishMode::Host)
    };
    let table = PortTable::default();
    let lease = table
        .publish("a", None, &[spec], Ipv4Addr::LOCALHOST)
        .await
        .expect("publish udp");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client
        .connect(("127.0.0.1", published))
        .await
        .expect("connect");
    for word in ["one", "two"] {
        client.send(word.as_bytes()).await.expect("send");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("a reply in time")
            .expect("recv");
        assert_eq!(&buf[..n], format!("echo {word}").as_bytes());
    }
    drop(lease);
}

#[tokio::test]
async fn ingress_ports_are_shared_by_a_service_and_host_ports_are_not() {
    let (a, b) = (backend("a").await, backend("b").await);
    let free = TcpListener::bind("127.0.0.1:0").await.expect("probe");
    let published = free.local_addr().expect("addr").port();
    drop(free);
    let table = PortTable::default();
    let lo = Ipv4Addr::LOCALHOST;
    let la = table
        .publish(
            "a",
            Some("web"),
            &[port(a, published, PublishMode::Ingress)],
            lo,
        )
        .await
        .expect("a");
    // The same target port cannot differ per backend here, so each test backend
    // listens on its own port: publish b with its own target.
    let lb = table
        .publish(
            "b",
            Some("web"),
            &[port(b, published, PublishMode::Ingress)],
            lo,
        )
        .await
        .expect("b shares the port");
    let mut seen = vec![ask(published).await, ask(published).await];
    seen.sort();
    assert_eq!(
        seen,
        ["a", "b"],
        "round-robin over the service's containers"
    );
    let err = table
        .publish(
            "c",
            Some("api"),
            &[port(a, published, PublishMode::Ingress)],
            lo,
        )
        .await
        .err()
        .expect("another service");
    assert!(err.contains("service/web publishes it"), "{err}");
    let err = table
        .publish("d", None, &[port(a, published, PublishMode::Host)], lo)
        .await
        .err()
        .expect("host mode is exclusive");
    assert!(err.contains(&format!("port {published}")), "{err}");
    drop(la);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(ask(published).await, "b", "a withdrawn");
    drop(lb);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(("127.0.0.1", published)).await.is_err(),
        "closed once nobody serves it"
    );
}
