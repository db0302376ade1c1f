//! Unpacking one image layer into its own directory, ready to be an overlayfs lower
//! layer.
//!
//! A layer is untrusted input. Every entry's path must be relative and stay inside the
//! layer (`..` and absolute paths are refused), nothing is ever written through a
//! symlink (so a symlink in the layer cannot redirect a later entry outside it), and a
//! hardlink must name a file already unpacked in this layer. One bad entry refuses the
//! whole layer: the caller unpacks into a scratch directory and throws it away.
//!
//! Whiteouts become what overlayfs understands: `.wh.NAME` a 0:0 character device
//! named NAME, `.wh..wh..opq` the `trusted.overlay.opaque` attribute on its directory.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?}: {why}")]
    Refused { path: String, why: &'static str },
    #[error("layer is not a readable tar archive: {0}")]
    Archive(io::Error),
    #[error("unpacking {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// How whiteouts are written: overlayfs's way for real, or recorded by tests.
pub trait Whiteouts {
    /// `path` (inside the layer) hides the same path of lower layers.
    fn whiteout(&self, path: &Path) -> io::Result<()>;
    /// The directory `dir` hides everything lower layers have in it.
    fn opaque(&self, dir: &Path) -> io::Result<()>;
}

/// overlayfs whiteouts: a 0:0 character device, and the opaque xattr. Needs root.
pub struct OverlayWhiteouts;

impl Whiteouts for OverlayWhiteouts {
    fn whiteout(&self, path: &Path) -> io::Result<()> {
        use nix::sys::stat::{mknod, Mode, SFlag};
        mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
    }

    fn opaque(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let name = c"trusted.overlay.opaque";
        // SAFETY: both strings are NUL-terminated and live across the call; the value
        // is one byte long as passed.
        let r = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// What an unpack produced.
#[derive(Debug)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar: the layer's diff ID.
    pub diff_id: String,
    pub entries: usize,
}

/// Reads everything it passes on into a sha256.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// The entry's path as plain relative components, or why not.
fn clean(raw: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("path leaves the layer (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// Makes sure no existing part of `rel`'s parents inside `root` is a symlink (or
/// anything but a directory), creating missing directories.
fn safe_parent(root: &Path, rel: &Path) -> Result<PathBuf, UnpackError> {
    let mut at = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for part in parent.components() {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::Refused {
                        path: rel.display().to_string(),
                        why: "path goes through a symlink",
                    })
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::Refused {
                        path: rel.display().to_string(),
                        why: "a parent is not a directory",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(|source| UnpackError::Io {
                        path: at.clone(),
                        source,
                    })?;
                }
                Err(source) => return Err(UnpackError::Io { path: at, source }),
            }
        }
    }
    Ok(root.join(rel))
}

/// Removes whatever is at `path` (not following symlinks), so an entry replaces it.
fn clear(path: &Path) -> Result<(), UnpackError> {
    let io = |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => fs::remove_file(path).map_err(io),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Unpacks the tar stream `layer` (already decompressed) into the empty directory
/// `dest`. Ownership is kept when running as root.
pub fn unpack_layer(
    layer: impl Read,
    dest: &Path,
    whiteouts: &dyn Whiteouts,
) -> Result<Unpacked, UnpackError> {
    let mut reader = Hashing {
        inner: layer,
        hash: Sha256::new(),
    };
    let mut entries = 0;
    {
        let mut archive = tar::Archive::new(&mut reader);
        let root_user = nix::unistd::geteuid().is_root();
        for entry in archive.entries().map_err(UnpackError::Archive)? {
            let mut entry = entry.map_err(UnpackError::Archive)?;
            entries += 1;
            let raw = entry.path().map_err(UnpackError::Archive)?.into_owned();
            let shown = raw.display().to_string();
            let refused = |why| UnpackError::Refused {
                path: shown.clone(),
                why,
            };
            let rel = clean(&raw).map_err(refused)?;
            if rel.as_os_str().is_empty() {
                continue; // "./" itself
            }
            let target = safe_parent(dest, &rel)?;
            let io = |source| UnpackError::Io {
                path: target.clone(),
                source,
            };
            let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if file_name == OPAQUE {
                let dir = target.parent().unwrap_or(dest);
                whiteouts.opaque(dir).map_err(io)?;
                continue;
            }
            if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.is_empty() || hidden == "." || hidden == ".." {
                    return Err(refused("malformed whiteout"));
                }
                let path = target.with_file_name(hidden);
                clear(&path)?;
                whiteouts.whiteout(&path).map_err(io)?;
                continue;
            }
            let (mode, kind, uid, gid) = {
                let h = entry.header();
                let mode = h.mode().map_err(UnpackError::Archive)? & 0o7777;
                let uid = h.uid().map_err(UnpackError::Archive)?;
                let gid = h.gid().map_err(UnpackError::Archive)?;
                (mode, h.entry_type(), uid, gid)
            };
            match kind {
                tar::EntryType::Directory => {
                    match fs::symlink_metadata(&target) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => return Err(refused("a directory replaces a file")),
                        Err(_) => fs::create_dir(&target).map_err(io)?,
                    }
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io)?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    clear(&target)?;
                    let mut f = fs::File::create(&target).map_err(io)?;
                    io::copy(&mut entry, &mut f).map_err(io)?;
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io)?;
                }
                tar::EntryType::Symlink => {
                    let to = entry
                        .link_name()
                        .map_err(UnpackError::Archive)?
                        .ok_or_else(|| refused("symlink without a target"))?;
                    clear(&target)?;
                    // The target is only ever resolved inside the container's root.
                    symlink(&to, &target).map_err(io)?;
                }
                tar::EntryType::Link => {
                    let to = entry
                        .link_name()
                        .map_err(UnpackError::Archive)?
                        .ok_or_else(|| refused("hardlink without a target"))?;
                    let to_rel = clean(&to).map_err(|_| refused("hardlink leaves the layer"))?;
                    let source = safe_parent(dest, &to_rel)?;
                    match fs::symlink_metadata(&source) {
                        Ok(m) if m.is_file() || m.file_type().is_symlink() => {}
                        _ => return Err(refused("hardlink to a file not in this layer")),
                    }
                    clear(&target)?;
                    fs::hard_link(&source, &target).map_err(io)?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    if kind != tar::EntryType::Fifo && !root_user {
                        continue; // Device nodes need root; runtimes mount /dev anyway.
                    }
                    clear(&target)?;
                    make_node(&entry, kind, &target, mode).map_err(io)?;
                }
                // PAX and GNU extension headers are consumed by the tar reader.
                tar::EntryType::XHeader
                | tar::EntryType::XGlobalHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => continue,
                _ => return Err(refused("unsupported entry type")),
            }
            if root_user && kind != tar::EntryType::Link {
                std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32))
                    .map_err(io)?;
                if kind != tar::EntryType::Symlink {
                    // chown clears set-id bits; put the mode back.
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io)?;
                }
            }
        }
    }
    // Whatever follows the archive's end (padding) belongs to the digest too.
    io::copy(&mut reader, &mut io::sink()).map_err(UnpackError::Archive)?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(reader.hash.finalize())),
        entries,
    })
}

fn make_node<R: Read>(
    entry: &tar::Entry<R>,
    kind: tar::EntryType,
    target: &Path,
    mode: u32,
) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let header = entry.header();
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    let flag = match kind {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    mknod(
        target,
        flag,
        Mode::from_bits_truncate(mode),
        makedev(major.into(), minor.into()),
    )
    .map_err(io::Error::from)
}
