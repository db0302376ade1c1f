//! The real [`ContainerRuntime`]: runc (or another OCI runtime with its command line)
//! under a `shoal-monitor` per container.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_api::Task;
use shoal_monitor::Exit;

use super::config::{runc, RuncConfig};
use super::rootfs::{Overlay, RootfsLayout};
use super::runtime::{Attachment, ContainerRuntime};
use super::start::{network, relaunch, start};
use crate::session::Reporter;

pub struct Runc {
    pub config: Arc<RuncConfig>,
}

#[async_trait]
impl ContainerRuntime for Runc {
    async fn attach(&self, task: &Task, id: &str, adopted: bool) -> Result<Attachment, String> {
        let (addresses, ports) = network(&self.config, task, id, adopted).await?;
        Ok(Attachment {
            addresses,
            hold: ports.map(|p| Box::new(p) as Box<dyn std::any::Any + Send + Sync>),
        })
    }

    async fn run(
        &self,
        task: &Task,
        reporter: &Reporter,
        dir: &Path,
        id: &str,
        addresses: &[String],
    ) -> Result<(), String> {
        start(&self.config, task, reporter, dir, id, addresses).await
    }

    async fn restart(&self, task: &Task, dir: &Path, id: &str) -> Result<(), String> {
        relaunch(&self.config, task, dir, id).await
    }

    async fn exists(&self, id: &str) -> bool {
        runc(&self.config, &["state", id]).await.is_ok()
    }

    fn exit(&self, dir: &Path) -> Option<Exit> {
        Exit::read(dir)
    }

    async fn kill(&self, id: &str, signal: &str) {
        let _ = runc(&self.config, &["kill", id, signal]).await;
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<(), String> {
        let mut child = tokio::process::Command::new(&self.config.runtime);
        child
            .arg("--root")
            .arg(RuncConfig::runtime_root(&self.config.data_dir))
            .args(["exec", id])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(timeout, child.status()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("exit code {}", s.code().unwrap_or(-1))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {timeout:?}")),
        }
    }

    async fn delete(&self, id: &str, dir: &Path) {
        let _ = runc(&self.config, &["delete", "--force", id]).await;
        // The overlay first: it forgets the container by its node address (DNS
        // knows askers by it), which must still be this container's when it does.
        if let Some(overlay) = &self.config.overlay {
            overlay.detach(id).await;
        }
        if let Some(net) = &self.config.network {
            net.detach(id).await;
        }
        if let Err(e) = RootfsLayout::new(dir).remove(&Overlay) {
            tracing::warn!(container = %id, error = %e, "could not remove the container's files");
        }
    }
}
