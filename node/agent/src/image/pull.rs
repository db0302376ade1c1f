//! Pulling an image over the OCI distribution protocol (oci-client), verified and
//! unpacked into the store, reporting progress as it goes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::Utc;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWrite;

use super::store::{ImageRecord, ImageStore, LayerRecord};
use super::unpack::OverlayWhiteouts;
use super::ImageError;

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`host:port`) spoken to over plain http. Loopback registries always are.
    pub insecure_registries: Vec<String>,
}

/// What a pull is doing, for progress output and task status.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Resolved {
        manifest: String,
        layers: usize,
    },
    Downloading {
        layer: String,
        done: u64,
        total: u64,
    },
    Cached {
        layer: String,
    },
    Unpacked {
        layer: String,
    },
}

fn registry_err(e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry(e.to_string())
}

/// Plain http for loopback registries and the ones named insecure; https otherwise.
fn protocol(registry: &str, opts: &PullOptions) -> ClientProtocol {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || opts.insecure_registries.iter().any(|r| r == registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    }
}

/// Counts bytes on their way to the file and reports them, at most five times a second.
struct Counting<'a, W> {
    inner: W,
    layer: &'a str,
    done: u64,
    total: u64,
    last: Instant,
    progress: &'a mut (dyn FnMut(Progress) + Send),
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.done += *n as u64;
            if this.last.elapsed() >= Duration::from_millis(200) || this.done == this.total {
                this.last = Instant::now();
                (this.progress)(Progress::Downloading {
                    layer: this.layer.to_string(),
                    done: this.done,
                    total: this.total,
                });
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Pulls `reference` into `store` (layers already present are not fetched again) and
/// records it under its full name.
pub async fn pull(
    store: &ImageStore,
    reference: &str,
    opts: &PullOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<ImageRecord, ImageError> {
    // reqwest is built without a default crypto provider; ours is ring, as for the API.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let image: Reference = reference
        .parse()
        .map_err(|e| ImageError::Invalid(format!("image reference {reference:?}: {e}")))?;
    let client = Client::new(ClientConfig {
        protocol: protocol(image.resolve_registry(), opts),
        ..Default::default()
    });
    let auth = RegistryAuth::Anonymous;
    // Resolves an index to this platform's manifest; then the manifest as served, so
    // the stored bytes are exactly the ones the digest names.
    let (manifest, digest) = client
        .pull_image_manifest(&image, &auth)
        .await
        .map_err(|e| registry_err(format!("{}: {e}", image.whole())))?;
    let pinned = image.clone_with_digest(digest.clone());
    let (raw, _) = client
        .pull_manifest_raw(
            &pinned,
            &auth,
            &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE],
        )
        .await
        .map_err(registry_err)?;
    store.put_blob(&raw, &digest)?;
    progress(Progress::Resolved {
        manifest: digest.clone(),
        layers: manifest.layers.len(),
    });

    let mut config = Vec::new();
    client
        .pull_blob(&image, &manifest.config, &mut config)
        .await
        .map_err(registry_err)?;
    store.put_blob(&config, &manifest.config.digest)?;
    let diff_ids = diff_ids(&config)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Invalid(format!(
            "{}: the config lists {} layers, the manifest {}",
            image.whole(),
            diff_ids.len(),
            manifest.layers.len()
        )));
    }

    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
        fetch_layer(store, &client, &image, desc, progress).await?;
        let layer = LayerRecord {
            digest: desc.digest.clone(),
            diff_id,
            size: desc.size.max(0) as u64,
        };
        unpack(store, &layer).await?;
        progress(Progress::Unpacked {
            layer: layer.digest.clone(),
        });
        layers.push(layer);
    }
    let record = ImageRecord {
        name: image.whole(),
        manifest: digest,
        config: manifest.config.digest.clone(),
        layers,
        created: Utc::now(),
    };
    store.add(record.clone())?;
    Ok(record)
}

async fn fetch_layer(
    store: &ImageStore,
    client: &Client,
    image: &Reference,
    desc: &OciDescriptor,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), ImageError> {
    if store.has_blob(&desc.digest) {
        progress(Progress::Cached {
            layer: desc.digest.clone(),
        });
        return Ok(());
    }
    let tmp = store.scratch("download");
    let file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|source| ImageError::Io {
            path: tmp.clone(),
            source,
        })?;
    let counting = Counting {
        inner: file,
        layer: &desc.digest,
        done: 0,
        total: desc.size.max(0) as u64,
        last: Instant::now(),
        progress,
    };
    let pulled = client.pull_blob(image, desc, counting).await;
    if let Err(e) = pulled {
        let _ = std::fs::remove_file(&tmp);
        return Err(registry_err(format!("layer {}: {e}", desc.digest)));
    }
    // Verified again from disk: what is stored is what the digest names.
    store.commit_blob_file(&tmp, &desc.digest)
}

/// Unpacking is blocking file work: off the async threads.
pub(crate) async fn unpack(store: &ImageStore, layer: &LayerRecord) -> Result<(), ImageError> {
    let root = store.root().to_path_buf();
    let layer = layer.clone();
    tokio::task::spawn_blocking(move || {
        ImageStore::open(&root)?.unpack(&layer, &OverlayWhiteouts)?;
        Ok(())
    })
    .await
    .map_err(|e| ImageError::Invalid(format!("unpack task: {e}")))?
}

/// The layers' uncompressed digests, from an image config.
pub(crate) fn diff_ids(config: &[u8]) -> Result<Vec<String>, ImageError> {
    let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(config)
        .map_err(|e| ImageError::Invalid(format!("image config: {e}")))?;
    Ok(config.rootfs().diff_ids().clone())
}
