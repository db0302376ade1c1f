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

/// `shoal ARGS`, quiet, talking to `server` when given.
pub fn spawn(args: &[&str], server: Option<&str>) -> Proc {
    let mut cmd = Command::new(shoal());
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(s) = server {
        cmd.env("SHOAL_SERVER", s);
    }
    Proc(cmd.spawn().expect("spawn shoal"))
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

/// A client of the server at `url`, once it answers (it was just started).
pub async fn connect_when_up(url: &str) -> ApiClient<Channel> {
    loop {
        match shoal_wire::api_client(url, None).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
