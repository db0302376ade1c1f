//! How this node runs containers: where their files live, which OCI runtime and
//! monitor run them, and the runtime's command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shoal_api::Task;

use super::network::Network;
use super::overlay::Overlay;
use super::ports::PortTable;
use crate::image::PullOptions;

#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// Images in `<data_dir>/images`, containers in `<data_dir>/containers`.
    pub data_dir: PathBuf,
    /// The OCI runtime binary.
    pub runtime: String,
    /// The `shoal-monitor` program, one process per container.
    pub monitor_exe: PathBuf,
    pub pull: PullOptions,
    pub stop_grace: Duration,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The node network containers join; None: each gets an empty namespace.
    pub network: Option<Network>,
    /// The ports this node publishes.
    pub ports: PortTable,
    /// Overlay networks (with `network`); None: tasks' overlay attachments are refused.
    pub overlay: Option<std::sync::Arc<Overlay>>,
}

impl RuncConfig {
    /// The runtime's state directory (`runc --root`).
    pub fn runtime_root(data_dir: &Path) -> PathBuf {
        data_dir.join("runtime")
    }

    /// Where a task's container keeps its bundle, writable layer, logs and exit.
    pub fn container_dir(&self, task: &Task) -> PathBuf {
        self.data_dir.join("containers").join(container_id(task))
    }
}

/// The runtime's id for a task's container (stable across agent restarts).
pub fn container_id(task: &Task) -> String {
    format!(
        "shoal-{}",
        task.metadata.uid.as_deref().unwrap_or(&task.metadata.name)
    )
}

/// Runs the OCI runtime with `args` on this node's runtime root; its stdout, or its
/// stderr as the error.
pub(super) async fn runc(config: &RuncConfig, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(&config.runtime)
        .arg("--root")
        .arg(RuncConfig::runtime_root(&config.data_dir))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{}: {e}", config.runtime))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
