//! Images on a node: a content-addressed store, pulls over the OCI distribution
//! protocol, imports of `docker save` archives and OCI layouts, and safe unpacking of
//! layers into overlayfs lower directories.

mod import;
mod pull;
mod store;
pub mod unpack;

use std::path::PathBuf;

pub use import::import_archive;
pub use pull::{pull, Progress, PullOptions};
pub use store::{digest_hex, ImageRecord, ImageStore, LayerRecord};
pub use unpack::{OverlayWhiteouts, UnpackError, Whiteouts};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Invalid(String),
    #[error("image {0} is not in the local store")]
    NotFound(String),
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("layer {digest} refused: {source}")]
    Layer { digest: String, source: UnpackError },
    #[error("registry: {0}")]
    Registry(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The full name of an image reference (`busybox` → `docker.io/library/busybox:latest`),
/// as the store records it.
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    let r: oci_client::Reference = reference
        .parse()
        .map_err(|e| ImageError::Invalid(format!("image reference {reference:?}: {e}")))?;
    Ok(r.whole())
}
