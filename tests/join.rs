//! Joining a cluster with a token: `shoal token create|rotate`, and a real agent
//! (`shoal agent --join URL --token T`) that gets its certificate from the cluster CA
//! through a CSR, keeps its key to itself, pins the CA the token names, and is
//! refused, changing nothing on the machine, with a token that is wrong or rotated;
//! and that renews its certificate once its clock reaches the renewal point.
//! Certificates are read back with the real openssl. As root (the agent).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::node::remove_containers;
use support::*;

const BRIDGE: &str = "shoaljoin0";
/// The bridge a refused agent would have made, were it to make one.
const REFUSED_BRIDGE: &str = "shoaljoin1";
const SUBNET: &str = "10.233.0.0/24";

struct Cluster {
    server: Server,
    dir: tempfile::TempDir,
    /// The agent that joined, once one has.
    agent: Option<std::process::Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        remove_containers(&self.dir.path().join("node"), BRIDGE);
        remove_containers(&self.dir.path().join("refused"), REFUSED_BRIDGE);
    }
}

fn token(c: &Cluster, args: &[&str]) -> String {
    ok(c.server.shoal(&[&["token"], args].concat()))
        .trim()
        .to_string()
}

fn agent_cmd(c: &Cluster, data: &Path, token: &str, bridge: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    agent_args(&mut cmd, data, bridge);
    cmd.args(["--join", &c.server.url, "--token", token]);
    cmd
}

/// What every agent here runs with.
fn agent_args(cmd: &mut Command, data: &Path, bridge: &str) {
    cmd.args(["agent", "--name", "joiner", "--netns-pool", "0"])
        .args(["--bridge", bridge, "--subnet", SUBNET])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data);
}

/// `cert` verifies against `ca` and is for `key`: their public keys agree (openssl's
/// reading).
fn signed_for_its_key(ca: &Path, cert: &Path, key: &Path) {
    let (ca, cert, key) = (ca.display(), cert.display(), key.display());
    let verified = openssl(&["verify", "-CAfile", &ca.to_string(), &cert.to_string()]);
    assert!(verified.contains(": OK"), "{verified}");
    let of_cert = openssl(&["x509", "-in", &cert.to_string(), "-noout", "-pubkey"]);
    let of_key = openssl(&["pkey", "-in", &key.to_string(), "-pubout"]);
    assert_eq!(of_cert, of_key, "{cert} is for {key}");
}

/// A certificate's serial number, as openssl reads it.
fn serial_of(cert: &Path) -> String {
    openssl(&[
        "x509",
        "-in",
        &cert.display().to_string(),
        "-noout",
        "-serial",
    ])
}

/// An agent that must fail to join: its output, once it has exited.
fn refused_join(c: &Cluster, data: &Path, token: &str) -> Output {
    let out = agent_cmd(c, data, token, REFUSED_BRIDGE)
        .stdout(Stdio::null())
        .output()
        .expect("run shoal agent");
    assert!(
        !data.join("pki").exists(),
        "a refused node wrote credentials"
    );
    let bridge = Command::new("ip")
        .args(["link", "show", REFUSED_BRIDGE])
        .output()
        .expect("ip");
    assert!(
        !bridge.status.success(),
        "a refused node made its bridge: {}",
        stdout(&bridge)
    );
    out
}

fn openssl(args: &[&str]) -> String {
    ok(Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed"))
}

/// A file's permission bits.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

fn digest_of(token: &str) -> &str {
    token.split('-').nth(2).expect("a digest in the token")
}

fn a_token_is_made_once_and_names_the_clusters_ca(c: &mut Cluster) {
    let t = token(c, &["create"]);
    let parts: Vec<&str> = t.split('-').collect();
    assert_eq!(parts.len(), 4, "{t}");
    assert_eq!(&parts[..2], ["SHOAL", "1"], "{t}");
    assert_eq!(parts[2].len(), 64, "{t}");
    assert_eq!(parts[3].len(), 32, "{t}");
    assert_eq!(token(c, &["create"]), t, "the same token on asking again");
    let manager = token(c, &["create", "--role", "manager"]);
    assert_ne!(manager, t, "a role has its own");
    assert_eq!(digest_of(&manager), digest_of(&t), "one CA");
    refused(
        c.server.shoal(&["token", "create", "--role", "boss"]),
        "invalid value 'boss'",
    );
}

fn a_wrong_token_is_refused_and_the_machine_left_alone(c: &mut Cluster) {
    let t = token(c, &["create"]);
    let data = c.dir.path().join("wrong");
    let wrong_secret = format!("SHOAL-1-{}-{}", digest_of(&t), "0".repeat(32));
    let out = refused_join(c, &data, &wrong_secret);
    let err = stderr(&out);
    assert!(err.contains("the token is not valid"), "{err}");
    let other_ca = format!(
        "SHOAL-1-{}-{}",
        "a".repeat(64),
        t.rsplit('-').next().unwrap_or("")
    );
    // Checked by the node before the token leaves it: the server never sees it.
    let err = stderr(&refused_join(c, &data, &other_ca));
    assert!(
        err.contains("is not the one the token names") && err.contains("not trusting it"),
        "{err}"
    );
    let err = stderr(&refused_join(c, &data, "SHOAL-1-nonsense"));
    assert!(err.contains("--token"), "{err}");
}

fn a_node_joins_and_gets_a_certificate_for_its_key_alone(c: &mut Cluster) {
    let t = token(c, &["create"]);
    let data = c.dir.path().join("node");
    let child = agent_cmd(c, &data, &t, BRIDGE)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start shoal agent");
    c.agent = Some(child);
    wait("the joined node is ready", 30, || {
        let nodes = c.server.shoal(&["get", "node", "joiner", "-o", "json"]);
        nodes.status.success() && json(nodes)["status"]["state"] == "ready"
    });
    let pki: PathBuf = data.join("pki");
    let (ca, cert, key) = (
        pki.join("ca.pem"),
        pki.join("node.pem"),
        pki.join("node.key"),
    );
    assert_eq!(mode_of(&key), 0o600, "the node's key is private");
    let subject = openssl(&[
        "x509",
        "-in",
        &cert.display().to_string(),
        "-noout",
        "-subject",
    ]);
    assert!(
        subject.contains("CN = joiner") && subject.contains("OU = shoal-node"),
        "{subject}"
    );
    signed_for_its_key(&ca, &cert, &key);
    // And the CA is the one the token names (its SHA-256 fingerprint).
    let fingerprint = openssl(&[
        "x509",
        "-in",
        &ca.display().to_string(),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let hex: String = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(hex, digest_of(&t), "{fingerprint}");
}

/// The joined agent again, its clock 50 minutes on (libfaketime; the server's clock
/// and every other are real): past the renewal point of its one-hour certificate
/// (50-80% of its life), it renews through `Agent.Renew`, writes the new key and
/// certificate in place, and goes on as the node with them.
fn a_node_renews_its_certificate_when_its_time_comes(c: &mut Cluster) {
    let data = c.dir.path().join("node");
    let pki = data.join("pki");
    let (ca, cert, key) = (
        pki.join("ca.pem"),
        pki.join("node.pem"),
        pki.join("node.key"),
    );
    let before = serial_of(&cert);
    if let Some(mut a) = c.agent.take() {
        let _ = a.kill();
        let _ = a.wait();
    }
    // libfaketime preloaded into the agent itself: the `faketime` wrapper would run it
    // as a child of its own, which outlives a kill of the wrapper.
    let lib = format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
        std::env::consts::ARCH
    );
    assert!(Path::new(&lib).is_file(), "{lib}: install faketime");
    let mut later = Command::new(env!("CARGO_BIN_EXE_shoal"));
    later
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "+50m")
        // Timers run on the real monotonic clock; only the calendar moves.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        // Files keep their real times: the certificate arrived 50 minutes ago.
        .env("NO_FAKE_STAT", "1");
    agent_args(&mut later, &data, BRIDGE);
    later.args(["--server", &c.server.url]);
    c.agent = Some(
        later
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("shoal agent under libfaketime"),
    );
    wait("the node renewed its certificate", 30, || {
        serial_of(&cert) != before
    });
    signed_for_its_key(&ca, &cert, &key);
    assert_eq!(mode_of(&key), 0o600, "the new key is private");
    // Past a heartbeat window, the node is still ready: it goes on with the new one.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let node = json(c.server.shoal(&["get", "node", "joiner", "-o", "json"]));
    assert_eq!(node["status"]["state"], "ready", "{node}");
    let renewed = serial_of(&cert);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(serial_of(&cert), renewed, "renewed once, not in a loop");
}

fn a_rotated_token_no_longer_joins(c: &mut Cluster) {
    let old = token(c, &["create"]);
    let rotated = ok(c.server.shoal(&["token", "rotate", "--role", "worker"]));
    let new = token(c, &["create"]);
    assert_ne!(new, old);
    assert!(rotated.contains(&new), "{rotated}");
    let err = stderr(&refused_join(c, &c.dir.path().join("late"), &old));
    assert!(err.contains("the token is not valid"), "{err}");
}

fn the_ca_and_its_tokens_outlive_a_server_restart(c: &mut Cluster) {
    let before = token(c, &["create"]);
    c.server.crash_and_restart();
    assert_eq!(token(c, &["create"]), before);
    let key = c.server.data_dir.join("cluster.key");
    assert_eq!(std::fs::metadata(&key).expect("cluster.key").len(), 32);
    assert_eq!(mode_of(&key), 0o600, "the cluster key is private");
}

#[test]
fn joining_with_a_token() {
    assert!(nix::unistd::geteuid().is_root(), "needs root (the agent)");
    let dir = tempfile::tempdir().expect("tempdir");
    // The shortest life a certificate may have, so a renewal is due within the hour.
    let server = Server::embedded_with(&dir.path().join("server"), &["--cert-lifetime", "1h"]);
    let mut c = Cluster {
        server,
        dir,
        agent: None,
    };
    run_scenarios(
        &mut c,
        scenarios![
            a_token_is_made_once_and_names_the_clusters_ca,
            a_wrong_token_is_refused_and_the_machine_left_alone,
            a_node_joins_and_gets_a_certificate_for_its_key_alone,
            a_node_renews_its_certificate_when_its_time_comes,
            a_rotated_token_no_longer_joins,
            the_ca_and_its_tokens_outlive_a_server_restart,
        ],
    );
}
