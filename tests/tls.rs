//! TLS with a certificate of the user's: a server on a non-loopback address serving
//! one, reached over https with its CA given to the CLI (which still proves who it is
//! with the cluster's admin certificate). Certificates are made by the real openssl.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl {args:?} failed");
}

fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=shoal test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
}

#[test]
fn tls_server_on_all_interfaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "server",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--data-dir",
            "data",
        ])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(shoal_testkit::wait_for_port(addr, Duration::from_secs(20)));
    let url = format!("https://127.0.0.1:{port}");
    // Clients still prove who they are with the cluster's admin certificate.
    let config = dir.path().join("data/admin.yaml");
    wait("the admin config", 20, || config.is_file());
    register_config(&url, config);
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().expect("utf8");
    let applied = shoal_at(
        &url,
        &["--ca-cert", ca, "apply", "-f", "-"],
        Some("apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: secure}\nspec: {}\n"),
    );
    assert!(ok(applied).contains("network/secure created"));
    // Without its CA (the config has the cluster's) the server's certificate is not
    // trusted.
    let untrusted = shoal_at(&url, &["get", "networks"], None);
    assert!(!untrusted.status.success());
    // Plaintext to a TLS port fails too.
    let plain = shoal_at(
        &format!("http://127.0.0.1:{port}"),
        &["get", "networks"],
        None,
    );
    assert!(!plain.status.success());
    let _ = child.kill();
    let _ = child.wait();
}
