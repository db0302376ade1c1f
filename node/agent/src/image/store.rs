//! The node's image store, content-addressed:
//!
//! ```text
//! <root>/blobs/sha256/<hex>    manifests, configs and layers as pulled (verified)
//! <root>/layers/sha256/<hex>   each layer unpacked, by diff ID (an overlayfs lower dir)
//! <root>/images.json           name → manifest, config and layers
//! <root>/tmp/                  downloads and unpacks in progress
//! ```
//!
//! Blobs and layers appear by rename once complete and verified, so a crash leaves only
//! scratch files in `tmp/`. The index is rewritten whole (write, fsync, rename) under a
//! file lock, because the agent and `shoal image` commands share it.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::unpack::{unpack_layer, Whiteouts};
use super::ImageError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// The blob as stored (usually gzip-compressed).
    pub digest: String,
    /// sha256 of the uncompressed tar, as the image config lists it.
    pub diff_id: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// Normalized reference: `registry/repository:tag`.
    pub name: String,
    pub manifest: String,
    pub config: String,
    pub layers: Vec<LayerRecord>,
    pub created: DateTime<Utc>,
}

impl ImageRecord {
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: Vec<ImageRecord>,
}

pub struct ImageStore {
    root: PathBuf,
}

/// The hex part of a `sha256:` digest, checked (it becomes a file name).
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        ImageError::Invalid(format!("{digest:?}: only sha256 digests are supported"))
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ImageError::Invalid(format!(
            "{digest:?} is not a sha256 digest"
        )));
    }
    Ok(hex)
}

pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        for dir in ["blobs/sha256", "layers/sha256", "tmp"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// The unpacked layer with this diff ID (it may not exist yet).
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers/sha256").join(digest_hex(diff_id)?))
    }

    /// A scratch path in `tmp/` (same filesystem, so finished work can be renamed in).
    pub fn scratch(&self, what: &str) -> PathBuf {
        let n: u64 = rand_u64();
        self.root.join("tmp").join(format!("{what}-{n:016x}"))
    }

    /// Moves a finished download into the store if its content has `digest`.
    pub fn commit_blob_file(&self, file: &Path, digest: &str) -> Result<(), ImageError> {
        let dest = self.blob_path(digest)?;
        let mut f = fs::File::open(file).map_err(io_at(file))?;
        let mut hash = Sha256::new();
        io::copy(&mut f, &mut HashWriter(&mut hash)).map_err(io_at(file))?;
        let actual = format!("sha256:{}", hex::encode(hash.finalize()));
        if actual != digest {
            let _ = fs::remove_file(file);
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: digest.into(),
                actual,
            });
        }
        fs::rename(file, &dest).map_err(io_at(&dest))
    }

    /// Stores `bytes`, checking them against `digest`.
    pub fn put_blob(&self, bytes: &[u8], digest: &str) -> Result<(), ImageError> {
        let actual = sha256_of(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: digest.into(),
                actual,
            });
        }
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.scratch("blob");
        let mut f = fs::File::create(&tmp).map_err(io_at(&tmp))?;
        f.write_all(bytes).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, &dest).map_err(io_at(&dest))
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(io_at(&path))
    }

    /// Unpacks a stored layer blob (unless already unpacked) and checks its diff ID.
    pub fn unpack(
        &self,
        layer: &LayerRecord,
        whiteouts: &dyn Whiteouts,
    ) -> Result<PathBuf, ImageError> {
        let dest = self.layer_dir(&layer.diff_id)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.blob_path(&layer.digest)?;
        let file = fs::File::open(&blob).map_err(io_at(&blob))?;
        let mut reader = BufReader::new(file);
        let stream = decompressed(&mut reader, &layer.digest)?;
        let scratch = self.scratch("layer");
        fs::create_dir(&scratch).map_err(io_at(&scratch))?;
        let unpacked = match unpack_layer(stream, &scratch, whiteouts) {
            Ok(u) => u,
            Err(source) => {
                let _ = fs::remove_dir_all(&scratch);
                return Err(ImageError::Layer {
                    digest: layer.digest.clone(),
                    source,
                });
            }
        };
        if unpacked.diff_id != layer.diff_id {
            let _ = fs::remove_dir_all(&scratch);
            return Err(ImageError::DigestMismatch {
                what: format!("layer {} (uncompressed)", layer.digest),
                expected: layer.diff_id.clone(),
                actual: unpacked.diff_id,
            });
        }
        match fs::rename(&scratch, &dest) {
            Ok(()) => Ok(dest),
            // Someone else unpacked it meanwhile: theirs is as good as ours.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&scratch);
                Ok(dest)
            }
            Err(e) => Err(io_at(&dest)(e)),
        }
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    /// Runs `f` on the index under the store's file lock; writes it back if `f` says so.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&mut Index) -> Result<(T, bool), ImageError>,
    ) -> Result<T, ImageError> {
        let lock_path = self.root.join("images.lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_at(&lock_path)(e.into()))?;
        let path = self.index_path();
        let mut index: Index = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ImageError::Invalid(format!("{}: unreadable image index: {e}", path.display()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let (out, changed) = f(&mut index)?;
        if changed {
            let tmp = self.scratch("index");
            let bytes = serde_json::to_vec_pretty(&index)
                .map_err(|e| ImageError::Invalid(e.to_string()))?;
            let mut file = fs::File::create(&tmp).map_err(io_at(&tmp))?;
            file.write_all(&bytes).map_err(io_at(&tmp))?;
            file.sync_all().map_err(io_at(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_at(&path))?;
        }
        Ok(out)
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.with_index(|i| Ok((i.images.clone(), false)))
    }

    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        self.with_index(|i| Ok((i.images.iter().find(|r| r.name == name).cloned(), false)))
    }

    /// Records an image whose blobs and layers are all in place (replacing the name).
    pub fn add(&self, record: ImageRecord) -> Result<(), ImageError> {
        self.with_index(|i| {
            i.images.retain(|r| r.name != record.name);
            i.images.push(record);
            i.images.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(((), true))
        })?;
        Ok(())
    }

    /// Forgets `name` and deletes the blobs and layers no other image uses.
    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageError> {
        self.with_index(|i| {
            let pos = i
                .images
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| ImageError::NotFound(name.to_string()))?;
            let gone = i.images.remove(pos);
            self.collect_garbage(&i.images)?;
            Ok((gone, true))
        })
    }

    fn collect_garbage(&self, keep: &[ImageRecord]) -> Result<(), ImageError> {
        let mut blobs = std::collections::HashSet::new();
        let mut layers = std::collections::HashSet::new();
        for r in keep {
            blobs.insert(digest_hex(&r.manifest)?.to_string());
            blobs.insert(digest_hex(&r.config)?.to_string());
            for l in &r.layers {
                blobs.insert(digest_hex(&l.digest)?.to_string());
                layers.insert(digest_hex(&l.diff_id)?.to_string());
            }
        }
        for (dir, keep) in [("blobs/sha256", &blobs), ("layers/sha256", &layers)] {
            let dir = self.root.join(dir);
            for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
                let entry = entry.map_err(io_at(&dir))?;
                let name = entry.file_name().to_string_lossy().to_string();
                if keep.contains(&name) {
                    continue;
                }
                let path = entry.path();
                let r = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                r.map_err(io_at(&path))?;
            }
        }
        Ok(())
    }
}

/// The layer's tar stream, whatever its compression (sniffed, not trusted from the
/// media type).
fn decompressed<'a, R: io::BufRead + 'a>(
    reader: &'a mut R,
    digest: &str,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    let head = reader
        .fill_buf()
        .map_err(|e| ImageError::Invalid(format!("layer {digest}: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::GzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(ImageError::Invalid(format!(
            "layer {digest} is zstd-compressed, which this build does not unpack yet"
        )))
    } else {
        Ok(Box::new(reader))
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Enough randomness for scratch names (not for secrets).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
