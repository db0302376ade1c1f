//! A real node agent for end-to-end tests (root, runc).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{free_port, Server};

/// A real `shoal agent` (node `node-1`) on its own bridge and subnet, killed on drop
/// with every container it ran.
pub struct Agent {
    pub child: Child,
    pub data: PathBuf,
    pub server: String,
    pub listen: String,
    bridge: String,
    subnet: String,
}

/// With `token`, the agent joins the cluster at `server`; without, it has joined
/// before and keeps its certificate.
fn spawn_agent(
    server: &str,
    token: Option<String>,
    data: &Path,
    listen: &str,
    bridge: &str,
    subnet: &str,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    match token {
        Some(token) => cmd
            .args(["agent", "--join", server])
            .env("SHOAL_JOIN_TOKEN", token),
        None => cmd.arg("agent").env("SHOAL_SERVER", server),
    };
    cmd.env_remove("SHOAL_CONFIG")
        .args(["--name", "node-1", "--stop-grace-period", "1s"])
        // A bridge and subnet of its own: other tests' agents may run at the same time.
        .args(["--bridge", bridge, "--subnet", subnet])
        .args(["--listen", listen])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        // Beside its data, where a test may read it; shown when a test fails.
        .stderr(super::log_file(&log_of(data)))
        .spawn()
        .expect("start shoal agent")
}

/// Where the agent on `data` logs.
fn log_of(data: &Path) -> PathBuf {
    data.with_extension("log")
}

impl Agent {
    pub fn start(server: &Server, data: &Path) -> Agent {
        Self::start_on(server, data, "shoaltest0", "10.231.0.0/24")
    }

    /// An agent whose node bridge is `bridge` with `subnet`.
    pub fn start_on(server: &Server, data: &Path, bridge: &str, subnet: &str) -> Agent {
        let listen = format!("127.0.0.1:{}", free_port());
        Agent {
            child: spawn_agent(
                &server.url,
                Some(server.token()),
                data,
                &listen,
                bridge,
                subnet,
            ),
            data: data.to_path_buf(),
            server: server.url.clone(),
            listen,
            bridge: bridge.to_string(),
            subnet: subnet.to_string(),
        }
    }

    /// `kill -9` of the agent alone, then a new agent on the same data.
    pub fn kill_and_restart(&mut self) -> Vec<String> {
        self.kill_then_restart(|| {})
    }

    /// As [`kill_and_restart`], doing `meanwhile` while no agent runs.
    pub fn kill_then_restart(&mut self, meanwhile: impl FnOnce()) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let survivors = self.running();
        meanwhile();
        self.child = spawn_agent(
            &self.server,
            None,
            &self.data,
            &self.listen,
            &self.bridge,
            &self.subnet,
        );
        survivors
    }

    /// Where it logs.
    pub fn log(&self) -> PathBuf {
        log_of(&self.data)
    }

    pub fn runc(&self, args: &[&str]) -> String {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.data.join("runtime"))
            .args(args)
            .output()
            .expect("runc");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Containers the runtime knows, running or stopped.
    pub fn containers(&self) -> Vec<String> {
        self.runc(&["list", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn running(&self) -> Vec<String> {
        let list: Value =
            serde_json::from_str(&self.runc(&["list", "--format", "json"])).unwrap_or(Value::Null);
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "running")
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect()
    }

    /// Mounts under the node's data directory, but for the agent's prepared
    /// namespaces (`netns-pool/`), which it keeps whatever runs.
    pub fn mounts(&self) -> usize {
        let data = self.data.display().to_string();
        let pool = self.data.join("netns-pool").display().to_string();
        std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&data) && !l.contains(&pool))
            .count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- the agent's last log lines ({}):", self.log().display());
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
        remove_containers(&self.data, &self.bridge);
    }
}

/// Containers (and the node's bridge) outlive the agent by design; a test must not leave
/// them behind.
pub fn remove_containers(node_data: &Path, bridge: &str) {
    shoal_testkit::remove_node_containers(node_data);
    let _ = Command::new("ip")
        .args(["link", "del", bridge])
        .stderr(Stdio::null())
        .status();
    for table in [
        shoal_agent::container::egress::table(bridge),
        shoal_agent::container::ports::kernel_table(bridge),
    ] {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &table])
            .stderr(Stdio::null())
            .status();
    }
}

/// What tests of a node's work start from: a server, a real agent on its own bridge
/// and subnet, and a registry holding the test image. Fields drop in order: the
/// agent (and its containers) first.
pub struct Node {
    pub agent: Agent,
    pub server: Server,
    pub registry: shoal_testkit::Registry,
    /// The test image in the registry.
    pub image: String,
    pub tmp: tempfile::TempDir,
}

impl Node {
    pub fn start(bridge: &str, subnet: &str) -> Node {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the agent needs root: run as root (hack/test.sh does)"
        );
        let registry = shoal_testkit::Registry::start();
        let tmp = tempfile::tempdir().expect("tempdir");
        let server = Server::embedded(&tmp.path().join("server"));
        let agent = Agent::start_on(&server, &tmp.path().join("node"), bridge, subnet);
        Node {
            agent,
            server,
            image: registry.image(),
            registry,
            tmp,
        }
    }
}
