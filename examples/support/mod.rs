//! What the benchmarks share: the `shoal` binary next to them, processes stopped on
//! drop, applying a manifest and watching a service's tasks through the API.

#![allow(dead_code)] // each benchmark uses a part

use std::process::{Child, Command, Stdio};

use shoal_wire::pb::{self, api_client::ApiClient};
use tonic::transport::Channel;

/// The `shoal` binary of the same build.
pub fn shoal() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("shoal")
}

/// A process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `shoal server` on a loopback port, with its data (and its home, so it leaves
/// ~/.shoal/config alone) in `data`.
pub struct ServerProc {
    pub proc: Proc,
    pub url: String,
    /// The admin config it writes.
    pub config: std::path::PathBuf,
}

/// Starts `shoal server` with `extra` flags: mutual TLS unless `--insecure` is one.
pub fn start_server(data: &std::path::Path, extra: &[&str]) -> ServerProc {
    let port = shoal_testkit::free_port();
    let scheme = if extra.contains(&"--insecure") {
        "http"
    } else {
        "https"
    };
    let config = data.join("admin.yaml");
    let _ = std::fs::remove_file(&config);
    std::fs::create_dir_all(data).expect("server data dir");
    let mut cmd = Command::new(shoal());
    cmd.args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("HOME", data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ServerProc {
        proc: Proc(cmd.spawn().expect("spawn shoal server")),
        url: format!("{scheme}://127.0.0.1:{port}"),
        config,
    }
}

/// `shoal ARGS`, quiet, talking to `server` (as its admin) when given.
pub fn spawn(args: &[&str], server: Option<&ServerProc>) -> Proc {
    let mut cmd = Command::new(shoal());
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(s) = server {
        cmd.env("SHOAL_SERVER", &s.url)
            .env("SHOAL_CONFIG", &s.config);
    }
    Proc(cmd.spawn().expect("spawn shoal"))
}

/// The worker join token of `server`.
pub async fn join_token(client: &mut ApiClient<Channel>) -> String {
    client
        .join_token(pb::JoinTokenRequest {
            role: "worker".into(),
            rotate: false,
        })
        .await
        .expect("join token")
        .into_inner()
        .token
}

pub async fn apply(client: &mut ApiClient<Channel>, yaml: &str) {
    let m = shoal_api::yaml::decode_manifests("bench", yaml).expect("manifest");
    let manifests = m
        .iter()
        .map(|m| pb::Manifest {
            json: serde_json::to_string(&m.object).expect("json"),
            source: "bench".into(),
        })
        .collect();
    client
        .apply(pb::ApplyRequest {
            manifests,
            dry_run: false,
        })
        .await
        .expect("apply");
}

/// A watch of `service`'s tasks: the current ones first, then every change.
pub async fn watch_service_tasks(
    client: &mut ApiClient<Channel>,
    service: &str,
) -> tonic::Streaming<pb::WatchResponse> {
    client
        .watch(pb::WatchRequest {
            kind: "Task".into(),
            label_selector: format!("shoal.dev/service={service}"),
            resource_version: 0,
            send_initial: true,
            name: String::new(),
            involved_object: String::new(),
        })
        .await
        .expect("watch")
        .into_inner()
}

/// A client of `server`, once it answers (it was just started) and has written its
/// admin config.
pub async fn connect_when_up(server: &ServerProc) -> ApiClient<Channel> {
    loop {
        let creds = match server.url.starts_with("https://") {
            true => shoal_wire::ClientConfig::read(&server.config)
                .ok()
                .and_then(|c| c.credentials(&server.config).ok()),
            false => Some(shoal_wire::Credentials::default()),
        };
        if let Some(creds) = creds {
            if let Ok(c) = shoal_wire::api_client(&server.url, &creds).await {
                return c;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
