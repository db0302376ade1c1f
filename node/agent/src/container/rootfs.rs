//! A container's root filesystem: the image's unpacked layers as overlayfs lower
//! directories (top layer first) and a writable layer of its own.

use std::io;
use std::path::{Path, PathBuf};

/// The mount calls, behind a trait so the layout logic is testable without root.
pub trait Mounter: Send + Sync {
    fn overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> io::Result<()>;
    /// A tmpfs of `size` bytes at `target`, only root may enter (a task's secrets).
    fn tmpfs(&self, target: &Path, size: u64) -> io::Result<()>;
    fn unmount(&self, target: &Path) -> io::Result<()>;
}

/// The kernel's overlayfs.
pub struct Overlay;

impl Mounter for Overlay {
    fn overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> io::Result<()> {
        let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(io::Error::from)
    }

    fn tmpfs(&self, target: &Path, size: u64) -> io::Result<()> {
        use nix::mount::MsFlags;
        let options = format!("size={size},mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )
        .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Where one container's filesystem lives: `<dir>/{upper,work,rootfs}`.
pub struct RootfsLayout {
    pub dir: PathBuf,
}

impl RootfsLayout {
    pub fn new(dir: &Path) -> Self {
        RootfsLayout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Mounts `layers` (bottom first, as an image lists them) with a fresh writable
    /// layer at `rootfs()`.
    pub fn mount(&self, layers: &[PathBuf], mounter: &dyn Mounter) -> io::Result<PathBuf> {
        if layers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an image without layers",
            ));
        }
        let (upper, work, rootfs) = (self.dir.join("upper"), self.dir.join("work"), self.rootfs());
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d)?;
        }
        let lower: Vec<PathBuf> = layers.iter().rev().cloned().collect();
        mounter.overlay(&lower, &upper, &work, &rootfs)?;
        Ok(rootfs)
    }

    /// Where the container's secrets and configs are, on a tmpfs of their own.
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// Unmounts and removes everything of this container's filesystem.
    pub fn remove(&self, mounter: &dyn Mounter) -> io::Result<()> {
        mounter.unmount(&self.rootfs())?;
        // Before the directory goes: its files vanish with the tmpfs, never touching disk.
        mounter.unmount(&self.files())?;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
