//! Real services for tests: an etcd on loopback with its own data directory, free ports,
//! and waiting helpers. Nothing here fakes anything; it starts the real programs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody is listening on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real etcd server on loopback, stopped (and its data removed) on drop.
pub struct Etcd {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts `etcd` from PATH. Panics with a clear message when it is not installed:
    /// `hack/test.sh` installs it.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let peer = free_port();
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--unsafe-no-fsync=false")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}); run hack/test.sh, which installs etcd-server")
            });
        let etcd = Etcd {
            child,
            port,
            _dir: dir,
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        assert!(
            wait_for_port(addr, Duration::from_secs(20)),
            "etcd did not start; see its log"
        );
        // The port opens before the member is ready to serve; ask until it answers.
        assert!(
            healthy(&etcd.endpoint(), Duration::from_secs(20)),
            "etcd on {port} never became healthy"
        );
        etcd
    }

    /// `127.0.0.1:PORT`, as `--store etcd://` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether every etcd member at `endpoints` answers healthy within `timeout`.
fn healthy(endpoints: &str, timeout: Duration) -> bool {
    eventually(timeout, || {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["endpoint", "health"])
            .output()
            .ok()?;
        out.status.success().then_some(())
    })
    .is_some()
}

/// Real etcd members on loopback forming one cluster, each stopped (and its data
/// removed) on drop; one can be killed on purpose.
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// `n` members, started together, healthy before this returns.
    pub fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (port, peer))| {
                let (client_url, peer_url) = (
                    format!("http://127.0.0.1:{port}"),
                    format!("http://127.0.0.1:{peer}"),
                );
                let log = std::fs::File::create(dir.path().join(format!("m{i}.log")))
                    .expect("etcd log");
                Some(
                    Command::new("etcd")
                        .arg(format!("--name=m{i}"))
                        .arg(format!("--data-dir={}", dir.path().join(format!("m{i}")).display()))
                        .arg(format!("--listen-client-urls={client_url}"))
                        .arg(format!("--advertise-client-urls={client_url}"))
                        .arg(format!("--listen-peer-urls={peer_url}"))
                        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                        .arg(format!("--initial-cluster={}", initial.join(",")))
                        .arg("--initial-cluster-state=new")
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .unwrap_or_else(|e| {
                            panic!("cannot start etcd ({e}); run hack/test.sh, which installs etcd-server")
                        }),
                )
            })
            .collect();
        let cluster = EtcdCluster {
            members,
            ports: ports.iter().map(|(p, _)| *p).collect(),
            _dir: dir,
        };
        assert!(
            healthy(&cluster.endpoints(), Duration::from_secs(30)),
            "the etcd cluster never became healthy"
        );
        cluster
    }

    /// `127.0.0.1:P,127.0.0.1:Q,...`, as `--store etcd://` takes it.
    pub fn addresses(&self) -> String {
        let all: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        all.join(",")
    }

    /// `http://127.0.0.1:P,...`, as etcdctl takes it.
    pub fn endpoints(&self) -> String {
        let all: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        all.join(",")
    }

    /// The member that leads now (by its index), as etcd reports it.
    pub fn leader(&self) -> Option<usize> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let rows = status.as_array()?;
        let leader_id = rows.first()?["Status"]["leader"].as_u64()?;
        rows.iter()
            .position(|r| r["Status"]["header"]["member_id"].as_u64() == Some(leader_id))
    }

    /// Kills member `i` (-9).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A real registry (Debian's docker-registry, distribution v2) on loopback holding the
/// test image that `hack/build-test-image.sh` builds, stopped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The workspace root (testkit lives in `tests/testkit`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

impl Registry {
    /// Starts `docker-registry` and pushes the test image to it as
    /// `shoal-test/busybox:1` (with skopeo). Panics with a clear message when a tool is
    /// missing: `hack/test.sh` installs docker-registry, skopeo and busybox-static.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start docker-registry ({e}); run hack/test.sh, which installs it")
            });
        let registry = Registry { child, port, dir };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        assert!(
            wait_for_port(addr, Duration::from_secs(20)),
            "docker-registry did not start"
        );
        let layout = registry.oci_layout();
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{}", registry.image()))
            .output()
            .unwrap_or_else(|e| panic!("cannot run skopeo ({e}); run hack/test.sh"));
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        registry
    }

    /// The test image as an OCI layout directory (built once per registry).
    pub fn oci_layout(&self) -> std::path::PathBuf {
        let layout = self.dir.path().join("layout");
        if !layout.join("index.json").is_file() {
            build_test_image(&layout);
        }
        layout
    }

    /// `127.0.0.1:PORT`
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The test image's reference in this registry.
    pub fn image(&self) -> String {
        format!("{}/shoal-test/busybox:1", self.address())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the test image (busybox-static, tag `1`) as an OCI layout in `dest`, with
/// `hack/build-test-image.sh`.
pub fn build_test_image(dest: &std::path::Path) {
    let out = Command::new("bash")
        .arg(workspace_root().join("hack/build-test-image.sh"))
        .arg(dest)
        .output()
        .expect("run hack/build-test-image.sh");
    assert!(
        out.status.success(),
        "hack/build-test-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes what a `shoal agent` with data in `node_data` left running: its containers
/// (they outlive the agent by design) and every mount under the directory. For tests
/// and benchmarks, which must not leave them behind.
pub fn remove_node_containers(node_data: &std::path::Path) {
    let runc = |args: &[&str]| {
        Command::new("runc")
            .arg("--root")
            .arg(node_data.join("runtime"))
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    for id in runc(&["list", "-q"]).lines() {
        runc(&["delete", "--force", id]);
    }
    let prefix = node_data.display().to_string();
    for line in std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
    {
        if let Some(target) = line.split(' ').nth(1).filter(|t| t.starts_with(&prefix)) {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
pub mod git;
