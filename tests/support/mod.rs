//! Real `shoal` processes for end-to-end tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub mod node;

#[allow(unused_imports)]
pub use shoal_testkit::{eventually, free_port, Etcd};

/// Which client config a test server wrote, by its port: the CLI run against a
/// server's URL gets that server's admin config.
static CONFIGS: std::sync::Mutex<Vec<(u16, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Says that `config` is the admin config of the server at `url` (one a test did not
/// start through [`Server`]).
pub fn register_config(url: &str, config: PathBuf) {
    let port: Option<u16> = url.rsplit(':').next().and_then(|p| p.parse().ok());
    if let Some(port) = port {
        let mut configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
        configs.retain(|(p, _)| *p != port);
        configs.push((port, config));
    }
}

/// The admin config of the (first) server `url` names.
pub fn config_for(url: &str) -> Option<PathBuf> {
    let first = url.split(',').next()?;
    let port: u16 = first
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
    configs
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, c)| c.clone())
}

/// The admin's credentials for the server at `url` (none for a plaintext one).
pub fn credentials_for(url: &str) -> shoal_wire::Credentials {
    match config_for(url) {
        Some(path) => shoal_wire::ClientConfig::read(&path)
            .and_then(|c| c.credentials(&path))
            .expect("the server's admin config"),
        None => shoal_wire::Credentials::default(),
    }
}

/// Joins the cluster at `url` as node `name` with `token` (a key and CSR made here,
/// as an agent makes them): what that node then connects with.
pub async fn join_as(
    url: &str,
    token: &str,
    name: &str,
) -> Result<shoal_wire::Credentials, tonic::Status> {
    let (key_pem, csr_pem) = shoal_pki::new_key_and_csr(name).expect("key and CSR");
    let ca = credentials_for(url).ca_pem;
    let trust = shoal_wire::Credentials {
        ca_pem: ca.clone(),
        identity: None,
    };
    let channel = shoal_wire::channel(url, &trust).await.expect("connect");
    let joined = shoal_wire::agent_client(channel)
        .join(shoal_wire::pb::JoinRequest {
            token: token.into(),
            name: name.into(),
            csr_pem,
            sans: Vec::new(),
        })
        .await?
        .into_inner();
    let identity =
        shoal_wire::LiveIdentity::from_pem(joined.cert_pem.as_bytes(), key_pem.as_bytes())
            .expect("the issued certificate");
    Ok(shoal_wire::Credentials {
        ca_pem: ca,
        identity: Some(identity),
    })
}

/// A `shoal server` process, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The admin's client config it writes (`<data-dir>/admin.yaml`).
    pub config: PathBuf,
    pub id: String,
    store: Option<String>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// The address it listens at (its port is `port`).
    listen_ip: String,
}

impl Server {
    /// Embedded store in `data_dir`.
    pub fn embedded(data_dir: &Path) -> Server {
        Self::start(data_dir, None, "embedded")
    }

    /// etcd store at `address` (`127.0.0.1:PORT`).
    pub fn etcd(address: &str, id: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("shoal-unused-{id}-{}", std::process::id()));
        Self::start(&dir, Some(format!("etcd://{address}")), id)
    }

    /// Embedded store, with extra `shoal server` flags.
    pub fn embedded_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with(data_dir, None, "embedded", extra)
    }

    /// Embedded store, with extra `shoal server` flags and environment.
    pub fn embedded_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_env(data_dir, None, "embedded", extra, env, "127.0.0.1")
    }

    /// Embedded store, listening on every address (the wildcard) rather than loopback.
    pub fn embedded_wide(data_dir: &Path) -> Server {
        Self::start_env(data_dir, None, "embedded", &[], Vec::new(), "0.0.0.0")
    }

    /// etcd store, with extra `shoal server` flags.
    pub fn etcd_with(address: &str, id: &str, extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("shoal-unused-{id}-{}", std::process::id()));
        Self::start_with(&dir, Some(format!("etcd://{address}")), id, extra)
    }

    fn start(data_dir: &Path, store: Option<String>, id: &str) -> Server {
        Self::start_with(data_dir, store, id, &[])
    }

    fn start_with(data_dir: &Path, store: Option<String>, id: &str, extra: &[&str]) -> Server {
        Self::start_env(data_dir, store, id, extra, Vec::new(), "127.0.0.1")
    }

    fn start_env(
        data_dir: &Path,
        store: Option<String>,
        id: &str,
        extra: &[&str],
        env: Vec<(String, String)>,
        listen_ip: &str,
    ) -> Server {
        let port = free_port();
        let insecure = extra.contains(&"--insecure");
        let scheme = if insecure { "http" } else { "https" };
        let mut s = Server {
            child: None,
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            config: data_dir.join("admin.yaml"),
            id: id.to_string(),
            store,
            extra: extra.iter().map(|e| e.to_string()).collect(),
            env,
            listen_ip: listen_ip.into(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.arg("server")
            .arg("--listen")
            .arg(format!("{}:{}", self.listen_ip, self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--id")
            .arg(&self.id)
            // Its home is its own: a test server leaves ~/.shoal/config alone.
            .env("HOME", &self.data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            // Server logs are noise unless a failure is being chased: kept in
            // `server.log` (which a test may read), or shown with SHOAL_TEST_LOGS.
            .stderr(if std::env::var_os("SHOAL_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                log_file(&self.log())
            });
        if let Some(store) = &self.store {
            cmd.arg("--store").arg(store);
            // Servers of one cluster share its key (their data dirs differ).
            if !self.extra.iter().any(|e| e == "--cluster-key-file") {
                let name = store.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
                cmd.arg("--cluster-key-file")
                    .arg(std::env::temp_dir().join(format!("shoal-test-key-{name}")));
            }
        }
        cmd.args(&self.extra);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // Written anew once the server serves: the old one says nothing.
        let _ = std::fs::remove_file(&self.config);
        self.child = Some(cmd.spawn().expect("start shoal server"));
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        assert!(
            shoal_testkit::wait_for_port(addr, Duration::from_secs(20)),
            "shoal server did not start listening on {addr}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.config.is_file() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.config.is_file(),
            "shoal server wrote no {}",
            self.config.display()
        );
        let mut configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
        configs.retain(|(p, _)| *p != self.port);
        configs.push((self.port, self.config.clone()));
    }

    /// Where its log goes (unless SHOAL_TEST_LOGS shows it).
    pub fn log(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The admin's credentials, for raw gRPC clients.
    pub fn credentials(&self) -> shoal_wire::Credentials {
        credentials_for(&self.url)
    }

    /// The worker join token (`shoal token create`).
    pub fn token(&self) -> String {
        ok(self.shoal(&["token", "create"])).trim().to_string()
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// kill -9, then the same server again on the same port and data.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `shoal ARGS` against this server.
    pub fn shoal(&self, args: &[&str]) -> Output {
        shoal_at(&self.url, args, None)
    }

    /// Runs `shoal ARGS` with `stdin` as standard input.
    pub fn shoal_stdin(&self, args: &[&str], stdin: &str) -> Output {
        shoal_at(&self.url, args, Some(stdin))
    }

    /// Starts `shoal sim ARGS` against this server; killed on drop.
    pub fn sim(&self, args: &[&str]) -> Sim {
        let child = client(&self.url)
            .arg("sim")
            .args(args)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SHOAL_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start shoal sim");
        Sim { child: Some(child) }
    }

    /// Starts a long-running `shoal ARGS` (like `get -w`) with piped stdout; it is
    /// killed when dropped, so a failing test leaves none behind.
    pub fn spawn_shoal(&self, args: &[&str]) -> Spawned {
        spawn_shoal_at(&self.url, args)
    }
}

/// `spawn_shoal` with `SHOAL_SERVER` set to `url` (which may list several servers).
pub fn spawn_shoal_at(url: &str, args: &[&str]) -> Spawned {
    let child = client(url)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn shoal");
    Spawned(child)
}

/// A child process killed and reaped when dropped.
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `shoal sim` process.
pub struct Sim {
    child: Option<Child>,
}

impl Sim {
    /// `kill -9`: its nodes stop heartbeating.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `shoal` as a client of `url`, with the admin config of the server there.
pub fn client(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env_remove("SHOAL_CONFIG").envs(client_env(url));
    cmd
}

/// The environment that makes `shoal` a client of `url` (its server, and the admin
/// config of the server there), for commands run through another (`timeout`).
pub fn client_env(url: &str) -> Vec<(&'static str, std::ffi::OsString)> {
    let mut env = vec![("SHOAL_SERVER", url.into())];
    if let Some(config) = config_for(url) {
        env.push(("SHOAL_CONFIG", config.into()));
    }
    env
}

pub fn shoal_at(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = client(url)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    if let Some(text) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("shoal output")
}

/// `path` opened for appending, as a child's stderr (nowhere if it cannot be).
pub fn log_file(path: &Path) -> Stdio {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts a command failed saying `says`; returns its stderr.
pub fn refused(o: Output, says: &str) -> String {
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains(says),
        "expected a failure saying {says:?}: {:?} {err}",
        o.status
    );
    err
}

pub fn json(o: Output) -> serde_json::Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The repository's example manifests, copied so a test may edit them.
pub fn examples_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples");
    for entry in std::fs::read_dir(src).expect("examples") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

/// Lines from a running command's stdout, readable with a timeout.
pub fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads lines from `rx` into `seen` until one is what `want` looks for, and returns it;
/// fails the test after 30 s without it.
pub fn read_until(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            Err(_) => break,
        }
    }
    panic!("the line looked for never came; read: {seen:?}");
}

/// The events about `reference` (`service/web`), as JSON.
pub fn events_for(server: &Server, reference: &str) -> Vec<serde_json::Value> {
    json(server.shoal(&["events", "--for", reference, "-o", "json"]))["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn apply(server: &Server, yaml: &str) {
    ok(server.shoal_stdin(&["apply", "-f", "-"], yaml));
}

/// A service's tasks, live and history, as JSON.
pub fn tasks(server: &Server, service: &str) -> Vec<serde_json::Value> {
    tasks_at(&server.url, service)
}

/// The same, from the server at `url`.
pub fn tasks_at(url: &str, service: &str) -> Vec<serde_json::Value> {
    let selector = format!("shoal.dev/service={service}");
    let list = json(shoal_at(
        url,
        &["get", "tasks", "-l", &selector, "-o", "json"],
        None,
    ));
    list["items"].as_array().cloned().unwrap_or_default()
}

pub fn is_live(t: &serde_json::Value) -> bool {
    t["metadata"]["labels"]["shoal.dev/history"].is_null()
}

pub fn state(t: &serde_json::Value) -> &str {
    t["status"]["state"].as_str().unwrap_or("pending")
}

#[track_caller]
pub fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

/// A named scenario against a shared fixture.
pub type Scenario<F> = (&'static str, fn(&mut F));

/// The scenarios `f, g, ...`, each named by its function: `scenarios![f, g]`.
#[macro_export]
macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {
        &[$((stringify!($scenario), $scenario as fn(&mut _))),*]
    };
}

/// Runs each scenario against one expensive fixture (a server, an agent, a registry), as
/// the store conformance suite runs its checks: every scenario runs even when one before
/// it failed, and the failure names the scenarios that broke. `SHOAL_SCENARIO=TEXT`
/// runs only those whose name contains TEXT.
pub fn run_scenarios<F>(fixture: &mut F, scenarios: &[Scenario<F>]) {
    let only = std::env::var("SHOAL_SCENARIO").ok();
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        eprintln!("scenario {name}: started");
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(fixture)));
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => eprintln!("scenario {name}: ok ({took:.1}s)"),
            Err(_) => {
                eprintln!("scenario {name}: FAILED ({took:.1}s)");
                failed.push(*name);
            }
        }
    }
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}

/// The TCP listeners beyond loopback in `ss -ltnH` output (its fourth column), as
/// address and port.
pub fn listening_beyond_loopback(ss: &str) -> Vec<(String, u16)> {
    ss.lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| {
            let (ip, port) = local.rsplit_once(':')?;
            Some((ip.to_string(), port.parse().ok()?))
        })
        .filter(|(ip, _)| !(ip.starts_with("127.") || ip == "[::1]"))
        .collect()
}

/// Whether `addr` (host:port) speaks TLS only: a TLS handshake succeeds and a
/// plaintext gRPC call fails.
pub fn only_tls(rt: &tokio::runtime::Runtime, addr: &str) -> Result<(), String> {
    let plain = rt.block_on(async {
        let channel = shoal_wire::channel(
            &format!("http://{addr}"),
            &shoal_wire::Credentials::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        shoal_wire::pb::node_client::NodeClient::new(channel)
            .container_logs(shoal_wire::pb::ContainerLogsRequest::default())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    if plain.is_ok() {
        return Err("answered a plaintext call".into());
    }
    rt.block_on(shoal_wire::unverified_channel(&format!("https://{addr}")))
        .map(drop)
        .map_err(|e| format!("does not speak TLS: {e}"))
}
