//! `hack/bench-network.sh`'s VIP table figures (as root): how long shoal takes to write
//! a container's VIP table of 1,000 services with 10 backends each (the real `render`
//! and `nft` path, in a scratch network namespace), against 10 services, and how many
//! new connections per second go through a VIP with each table, to a server in a
//! second scratch namespace: a lookup among 1,000 VIPs must cost what one among 10 does.
//! Prints `name: value unit` lines.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_agent::container::vip::{nft, render, Vips};

const CLIENT: &str = "shoal-bv-c";
const SERVER: &str = "shoal-bv-s";

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "ip {args:?} failed");
}

fn remove_netns() {
    for ns in [CLIENT, SERVER] {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// `services` VIPs in 10.100.0.0/16 with 10 backends each; the last VIP's backends
/// are all the server, so connections to it reach something.
fn table(services: u32) -> Vips {
    let server = Ipv4Addr::new(10, 99, 0, 2);
    (0..services)
        .map(|i| {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 1)) + i);
            let backends = if i + 1 == services {
                vec![server; 10]
            } else {
                (0..10)
                    .map(|b| Ipv4Addr::new(10, 98, (i % 250) as u8, b as u8 + 1))
                    .collect()
            };
            (vip, backends)
        })
        .collect()
}

/// New connections per second to `vip:port` for `for_` (connect, read one byte, close).
fn conn_rate(vip: Ipv4Addr, port: u16, for_: Duration) -> f64 {
    let to = SocketAddr::from((vip, port));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_ {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    remove_netns();
    ip(&["netns", "add", CLIENT]);
    ip(&["netns", "add", SERVER]);
    ip(&[
        "-n", CLIENT, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        SERVER,
    ]);
    ip(&["-n", CLIENT, "addr", "add", "10.99.0.1/24", "dev", "eth0"]);
    ip(&["-n", SERVER, "addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    // VIPs are on-link, as they are in a container (in its overlay's subnet).
    ip(&["-n", CLIENT, "link", "set", "eth0", "up"]);
    ip(&["-n", CLIENT, "route", "add", "10.100.0.0/16", "dev", "eth0"]);
    for ns in [CLIENT, SERVER] {
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    // The server: accepts, writes one byte, closes; a port per measurement, so one
    // measurement's TIME_WAIT connections do not slow the next.
    for port in [9000u16, 9001] {
        std::thread::spawn(move || {
            enter(SERVER);
            let l = TcpListener::bind(("10.99.0.2", port)).expect("listen");
            for mut c in l.incoming().flatten() {
                let _ = c.write_all(b"x");
            }
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    let client = std::thread::spawn(|| {
        enter(CLIENT);
        let mut out = Vec::new();
        for (port, services) in [(9000u16, 10u32), (9001, 1000)] {
            let vips = table(services);
            let last = *vips.keys().last().expect("a VIP");
            let started = Instant::now();
            nft(&render(&vips, None)).expect("nft");
            let took = started.elapsed();
            let rate = conn_rate(last, port, Duration::from_secs(2));
            out.push((services, took, rate));
        }
        out
    });
    let results = client.join();
    remove_netns();
    let results = results.expect("client");
    for (services, took, rate) in &results {
        if *services == 1000 {
            println!(
                "program_1000_services_ms: {:.1} ms",
                took.as_secs_f64() * 1e3
            );
            println!("vip_conn_per_s_1000_services: {rate:.0} conn/s");
        } else {
            println!("program_10_services_ms: {:.1} ms", took.as_secs_f64() * 1e3);
            println!("vip_conn_per_s_10_services: {rate:.0} conn/s");
        }
    }
}
