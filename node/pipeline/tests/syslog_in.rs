//! util-linux `logger`, a real syslog client, sends over UDP and TCP (octet counted
//! and newline framed, RFC 5424 and RFC 3164); every message arrives parsed in a
//! file output, tagged by facility and severity.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_logs::buffer::{FileBuffer, Limits};
use shoal_logs::format::Format;
use shoal_logs::retry::Policy;
use shoal_logs::route::Router;
use shoal_logs::TagPattern;
use shoal_pipeline::output::{Output, Overflow};
use shoal_pipeline::sinks::Sink;
use shoal_pipeline::syslog_in::SyslogIn;
use shoal_pipeline::Engine;
use tokio_util::sync::CancellationToken;

fn logger(args: &[&str]) {
    let out = Command::new("logger")
        .args(args)
        .output()
        .expect("util-linux logger");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_over_udp_and_tcp_arrives_parsed_and_tagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        chunk_bytes: 1 << 20,
        chunk_age: Duration::from_millis(100),
        total_bytes: 16 << 20,
    };
    let (buffer, _) = FileBuffer::open(&dir.path().join("buffer"), limits).expect("buffer");
    let output = Output::new(
        "file",
        buffer,
        Overflow::Block,
        Policy::default(),
        Duration::from_millis(100),
        dir.path().join("dead"),
    );
    let out_file = dir.path().join("out.ndjson");
    let stop = CancellationToken::new();
    tokio::spawn(output.clone().run(
        Sink::File {
            path: out_file.clone(),
            format: Format::Json,
        },
        stop.clone(),
    ));
    let router = Router::new(
        vec![TagPattern::new("sys.**").expect("pattern")],
        vec![vec![]],
    );
    let engine = Arc::new(Engine::new(Vec::new(), router, vec![output]));
    let input = Arc::new(SyslogIn {
        tag: "sys".into(),
        engine,
        unparsed: Default::default(),
        events: Default::default(),
    });
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("tcp");
    let (udp_port, tcp_port) = (
        udp.local_addr().expect("addr").port().to_string(),
        tcp.local_addr().expect("addr").port().to_string(),
    );
    tokio::spawn(input.clone().serve_udp(udp, stop.clone()));
    tokio::spawn(input.clone().serve_tcp(tcp, stop.clone()));

    let base = ["--server", "127.0.0.1", "--tag", "shoaltest"];
    let mut udp_args = base.to_vec();
    udp_args.extend([
        "--port",
        &udp_port,
        "--udp",
        "--rfc5424",
        "--msgid",
        "M1",
        "-p",
        "local3.warning",
    ]);
    udp_args.extend(["--sd-id", "ex@32473", "--sd-param", "k=\"v\"", "over udp"]);
    logger(&udp_args);
    let mut counted = base.to_vec();
    counted.extend([
        "--port",
        &tcp_port,
        "--tcp",
        "--octet-count",
        "-p",
        "user.info",
        "over tcp, counted",
    ]);
    logger(&counted);
    let mut bsd = base.to_vec();
    bsd.extend([
        "--port",
        &tcp_port,
        "--tcp",
        "--rfc3164",
        "-p",
        "daemon.err",
        "over tcp, bsd",
    ]);
    logger(&bsd);

    let deadline = Instant::now() + Duration::from_secs(15);
    let records: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&out_file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON"))
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "3 messages; got {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find = |msg: &str| {
        records
            .iter()
            .find(|r| r["message"] == msg)
            .unwrap_or_else(|| panic!("{msg:?} in {records:?}"))
            .clone()
    };
    let u = find("over udp");
    assert_eq!(u["facility"], "local3");
    assert_eq!(u["severity"], "warn");
    assert_eq!(u["ident"], "shoaltest");
    assert_eq!(u["msgid"], "M1");
    assert!(
        u["extradata"]
            .as_str()
            .is_some_and(|s| s.contains(r#"[ex@32473 k="v"]"#)),
        "{u}"
    );
    let t = find("over tcp, counted");
    assert_eq!(t["severity"], "info");
    let b = find("over tcp, bsd");
    assert_eq!(b["facility"], "daemon");
    assert_eq!(b["severity"], "err");
    assert_eq!(b["ident"], "shoaltest");
    assert_eq!(input.unparsed.load(std::sync::atomic::Ordering::Relaxed), 0);
    stop.cancel();
}
