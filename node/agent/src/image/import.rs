//! `shoal image import`: a `docker save` archive or an OCI image layout (as a tar),
//! verified and unpacked into the store like a pull.

use std::fs;
use std::io;
use std::path::Path;

use chrono::Utc;
use serde::Deserialize;

use super::pull::{diff_ids, unpack};
use super::store::{sha256_of, ImageRecord, ImageStore, LayerRecord};
use super::unpack::{unpack_layer, Whiteouts};
use super::{normalize, ImageError};

/// An archive of blobs has no business carrying whiteouts.
struct NoWhiteouts;

impl Whiteouts for NoWhiteouts {
    fn whiteout(&self, _: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "whiteout in an image archive",
        ))
    }
    fn opaque(&self, _: &Path) -> io::Result<()> {
        self.whiteout(Path::new(""))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn invalid(file: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("{}: {why}", file.display()))
}

/// Imports every image in the archive at `file`; `name` names it (required when the
/// archive does not). Returns what was recorded.
pub async fn import_archive(
    store: &ImageStore,
    file: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let scratch = store.scratch("import");
    fs::create_dir(&scratch).map_err(|source| ImageError::Io {
        path: scratch.clone(),
        source,
    })?;
    let result = import_unpacked(store, file, &scratch, name).await;
    let _ = fs::remove_dir_all(&scratch);
    result
}

async fn import_unpacked(
    store: &ImageStore,
    file: &Path,
    dir: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let archive = fs::File::open(file).map_err(|source| ImageError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    unpack_layer(io::BufReader::new(archive), dir, &NoWhiteouts)
        .map_err(|e| invalid(file, format!("not a usable image archive: {e}")))?;
    let records = if dir.join("oci-layout").is_file() {
        oci_layout(store, file, dir, name)?
    } else if dir.join("manifest.json").is_file() {
        docker_save(store, file, dir, name)?
    } else {
        return Err(invalid(
            file,
            "neither an OCI layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
        ));
    };
    for r in &records {
        for layer in &r.layers {
            unpack(store, layer).await?;
        }
    }
    for r in &records {
        store.add(r.clone())?;
    }
    Ok(records)
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path, path: &Path) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(|e| invalid(file, format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(file, format!("{}: {e}", path.display())))
}

/// Moves the archive member at `path` into the store as the blob `digest`.
fn adopt(store: &ImageStore, path: &Path, digest: &str) -> Result<(), ImageError> {
    if store.has_blob(digest) {
        return Ok(());
    }
    store.commit_blob_file(path, digest)
}

fn pick_name(file: &Path, given: Option<&str>, found: Option<&str>) -> Result<String, ImageError> {
    match given.or(found) {
        Some(n) => normalize(n),
        None => Err(invalid(
            file,
            "the archive does not name the image; give --name",
        )),
    }
}

fn oci_layout(
    store: &ImageStore,
    file: &Path,
    dir: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let index: OciIndex = read_json(file, &dir.join("index.json"))?;
    if name.is_some() && index.manifests.len() != 1 {
        return Err(invalid(
            file,
            "--name needs an archive with exactly one image",
        ));
    }
    let blob = |digest: &str| -> Result<std::path::PathBuf, ImageError> {
        Ok(dir.join("blobs/sha256").join(super::digest_hex(digest)?))
    };
    let mut out = Vec::new();
    for m in &index.manifests {
        if m.media_type.contains("index") || m.media_type.contains("list") {
            return Err(invalid(
                file,
                "nested image indexes are not supported; import one platform",
            ));
        }
        let ann = |k: &str| m.annotations.get(k).map(String::as_str);
        let found = ann("io.containerd.image.name").or_else(|| {
            ann("org.opencontainers.image.ref.name").filter(|n| n.contains(['/', ':']))
        });
        let image_name = pick_name(file, name, found)?;
        let manifest_bytes = fs::read(blob(&m.digest)?)
            .map_err(|e| invalid(file, format!("manifest {}: {e}", m.digest)))?;
        store.put_blob(&manifest_bytes, &m.digest)?;
        let manifest: OciManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| invalid(file, format!("manifest {}: {e}", m.digest)))?;
        let config = fs::read(blob(&manifest.config.digest)?)
            .map_err(|e| invalid(file, format!("config {}: {e}", manifest.config.digest)))?;
        store.put_blob(&config, &manifest.config.digest)?;
        let ids = diff_ids(&config)?;
        if ids.len() != manifest.layers.len() {
            return Err(invalid(
                file,
                "config and manifest disagree on the number of layers",
            ));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers.iter().zip(ids) {
            adopt(store, &blob(&l.digest)?, &l.digest)?;
            layers.push(LayerRecord {
                digest: l.digest.clone(),
                diff_id,
                size: l.size.max(0) as u64,
            });
        }
        out.push(ImageRecord {
            name: image_name,
            manifest: m.digest.clone(),
            config: manifest.config.digest.clone(),
            layers,
            created: Utc::now(),
        });
    }
    Ok(out)
}

fn docker_save(
    store: &ImageStore,
    file: &Path,
    dir: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let manifests: Vec<DockerManifest> = read_json(file, &dir.join("manifest.json"))?;
    if name.is_some() && manifests.len() != 1 {
        return Err(invalid(
            file,
            "--name needs an archive with exactly one image",
        ));
    }
    let mut out = Vec::new();
    for m in manifests {
        // Member paths come from the archive: they must stay inside it.
        let member = |p: &str| -> Result<std::path::PathBuf, ImageError> {
            let rel = Path::new(p);
            if rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(invalid(
                    file,
                    format!("manifest.json names {p:?}, outside the archive"),
                ));
            }
            Ok(dir.join(rel))
        };
        let config = fs::read(member(&m.config)?)
            .map_err(|e| invalid(file, format!("{}: {e}", m.config)))?;
        let config_digest = sha256_of(&config);
        store.put_blob(&config, &config_digest)?;
        let ids = diff_ids(&config)?;
        if ids.len() != m.layers.len() {
            return Err(invalid(
                file,
                "config and manifest.json disagree on the number of layers",
            ));
        }
        let mut layers = Vec::new();
        let mut descriptors = Vec::new();
        for (path, diff_id) in m.layers.iter().zip(ids) {
            let path = member(path)?;
            let bytes =
                fs::read(&path).map_err(|e| invalid(file, format!("{}: {e}", path.display())))?;
            let digest = sha256_of(&bytes);
            adopt(store, &path, &digest)?;
            descriptors.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                "digest": digest,
                "size": bytes.len(),
            }));
            layers.push(LayerRecord {
                digest,
                diff_id,
                size: bytes.len() as u64,
            });
        }
        // docker save keeps no manifest; write the one a registry would serve.
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": descriptors,
        }))
        .map_err(|e| ImageError::Invalid(e.to_string()))?;
        let manifest_digest = sha256_of(&manifest);
        store.put_blob(&manifest, &manifest_digest)?;
        let image_name = pick_name(file, name, m.repo_tags.first().map(String::as_str))?;
        out.push(ImageRecord {
            name: image_name,
            manifest: manifest_digest,
            config: config_digest,
            layers,
            created: Utc::now(),
        });
    }
    Ok(out)
}
