//! Containers on a node: the OCI runtime spec a container runs with, and its root
//! filesystem (overlayfs over the image's layers).

pub mod rootfs;
pub mod spec;

pub use rootfs::{Mounter, Overlay, RootfsLayout};
pub use spec::{runtime_spec, ContainerRequest, SpecError, DEFAULT_CAPABILITIES};
