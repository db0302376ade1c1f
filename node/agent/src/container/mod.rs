//! Containers on a node: the executor that runs tasks through an OCI runtime, the
//! monitor process that holds each container's output and exit code, the runtime spec
//! a container runs with, and its root filesystem (overlayfs over the image's layers).

pub mod bundle;
pub mod executor;
pub mod logs;
pub mod netlink;
pub mod network;
pub mod ports;
pub mod rootfs;
pub mod spec;
mod start;

pub use bundle::{make_bundle, BundleError};
pub use executor::{RuncConfig, RuncExecutor};
pub use rootfs::{Mounter, Overlay, RootfsLayout};
pub use spec::{runtime_spec, ContainerRequest, SpecError, DEFAULT_CAPABILITIES};
