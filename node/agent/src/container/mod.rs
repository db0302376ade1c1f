//! Containers on a node: the executor that runs tasks through an OCI runtime, the
//! monitor process that holds each container's output and exit code, the runtime spec
//! a container runs with, and its root filesystem (overlayfs over the image's layers).
//!
//! `executor.rs` keeps the table of containers; `supervise.rs` runs one (with
//! `health.rs`, `restart.rs`, `stop.rs`) through the `ContainerRuntime` trait
//! (`runtime.rs`), which `runc.rs` implements with `start.rs` (image, rootfs, bundle,
//! monitor) and `config.rs` (paths, the runtime's command line).

pub mod bundle;
mod config;
pub mod egress;
pub mod executor;
mod files;
mod health;
pub mod logs;
mod mesh_netlink;
pub mod netlink;
pub mod netns_pool;
pub mod network;
pub mod overlay;
pub mod overlay_entries;
pub mod overlay_netlink;
pub mod ports;
mod restart;
pub mod rootfs;
mod runc;
mod runtime;
pub mod spec;
mod start;
mod stop;
mod supervise;
#[cfg(test)]
mod supervise_tests;
pub mod vip;

use shoal_api::{TaskState, TaskStatus};

pub use bundle::{make_bundle, BundleError};
pub use config::{container_id, RuncConfig};
pub use executor::RuncExecutor;
pub use rootfs::{Mounter, Overlay, RootfsLayout};
pub use runtime::ContainerRuntime;
pub use spec::{runtime_spec, ContainerRequest, SpecError, DEFAULT_CAPABILITIES};

/// A task status as the executor reports it.
fn status(state: TaskState, message: impl Into<String>, id: Option<&str>) -> TaskStatus {
    TaskStatus {
        state,
        message: message.into(),
        container_id: id.map(str::to_string),
        ..Default::default()
    }
}
