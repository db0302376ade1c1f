//! An OCI bundle for a container of a stored image: the image's layers mounted with a
//! writable layer of its own, and `config.json` for what the task asks.

use oci_spec::image::ImageConfiguration;

use super::rootfs::{Mounter, RootfsLayout};
use super::spec::{runtime_spec, ContainerRequest, SpecError};
use crate::image::{ImageError, ImageRecord, ImageStore};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("image config: {0}")]
    Config(serde_json::Error),
    #[error("mounting the root filesystem: {0}")]
    Mount(std::io::Error),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("writing config.json: {0}")]
    Write(oci_spec::OciSpecError),
}

/// Makes `layout.dir` a bundle that runs `req` in `image`.
pub fn make_bundle(
    store: &ImageStore,
    image: &ImageRecord,
    req: &ContainerRequest,
    layout: &RootfsLayout,
    mounter: &dyn Mounter,
) -> Result<(), BundleError> {
    let config: ImageConfiguration =
        serde_json::from_slice(&store.read_blob(&image.config)?).map_err(BundleError::Config)?;
    let layers = image
        .layers
        .iter()
        .map(|l| store.layer_dir(&l.diff_id))
        .collect::<Result<Vec<_>, _>>()?;
    let rootfs = layout.mount(&layers, mounter).map_err(BundleError::Mount)?;
    runtime_spec(&config, req, &rootfs)?
        .save(layout.dir.join("config.json"))
        .map_err(BundleError::Write)
}
