//! A task's Secrets and Configs in its container, as Docker puts them: the values the
//! server handed over are written to a tmpfs of the container's own (`<dir>/files`,
//! root only), never to the node's disk, and each file is bind-mounted read-only at
//! its path in the container (`/run/secrets/<target>` for a secret by default). The
//! tmpfs goes with the container (`RootfsLayout::remove`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use shoal_api::{FileKind, FileRef, Task};
use shoal_wire::pb;

use super::rootfs::{Mounter, RootfsLayout};
use super::spec::ContainerMount;

/// Room for a file's own bookkeeping on the tmpfs, beyond its bytes.
const PER_FILE: u64 = 4096;

/// Whether the task names any secret or config.
pub(super) fn wanted(task: &Task) -> bool {
    task.spec.container.files().next().is_some()
}

/// Writes `given` (what the server sent for `task`) to the container's tmpfs under
/// `layout` and gives the mounts that put each file in place.
pub(super) fn place(
    layout: &RootfsLayout,
    task: &Task,
    given: &[pb::TaskFile],
    mounter: &dyn Mounter,
) -> Result<Vec<ContainerMount>, String> {
    let dir = layout.files();
    // A file per reference: one value named twice is written twice.
    let size: u64 = task
        .spec
        .container
        .files()
        .filter_map(|(kind, r)| given_for(given, kind, r))
        .map(|f| f.data.len() as u64 + PER_FILE)
        .sum::<u64>()
        .max(64 * 1024);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // A start that failed part way may have left one.
    mounter
        .unmount(&dir)
        .and_then(|()| mounter.tmpfs(&dir, size))
        .map_err(|e| format!("a tmpfs for the task's secrets at {}: {e}", dir.display()))?;
    let mut mounts = Vec::new();
    // A file per reference, not per value: two references to one value may differ in
    // owner and mode.
    for (i, (kind, r)) in task.spec.container.files().enumerate() {
        let label = kind.reference(&r.name);
        let file = given_for(given, kind, r)
            .ok_or_else(|| format!("{label}: the server sent no value"))?;
        let mode = r
            .mode_bits()
            .ok_or_else(|| format!("{label}: mode {:?} is not octal", r.mode))?;
        let host = dir.join(format!("{i}-{}", label.replace('/', "-")));
        write_file(&host, &file.data, mode, r.uid, r.gid).map_err(|e| format!("{label}: {e}"))?;
        mounts.push(ContainerMount {
            source: Some(host),
            target: r.path(kind),
            read_only: true,
            size: None,
        });
    }
    Ok(mounts)
}

/// What the server sent for reference `r`.
fn given_for<'g>(
    given: &'g [pb::TaskFile],
    kind: FileKind,
    r: &FileRef,
) -> Option<&'g pb::TaskFile> {
    given
        .iter()
        .find(|f| f.kind == kind.kind() && f.name == r.name)
}

fn write_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&f, uid, gid)?;
    }
    // After the owner: a chown clears set-id bits, and the mode is the one asked for.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;

    /// Records mounts; the files land in the test's directory.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl Mounter for Recorded {
        fn overlay(&self, _: &[PathBuf], _: &Path, _: &Path, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn tmpfs(&self, target: &Path, size: u64) -> std::io::Result<()> {
            let mut calls = self.0.lock().expect("lock");
            calls.push(format!("tmpfs {} {size}", target.display()));
            Ok(())
        }
        fn unmount(&self, target: &Path) -> std::io::Result<()> {
            let mut calls = self.0.lock().expect("lock");
            calls.push(format!("unmount {}", target.display()));
            Ok(())
        }
    }

    fn task() -> Task {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1", "kind": "Task", "metadata": {"name": "t"},
            "spec": {
                "image": "x",
                "secrets": [{"name": "db-pass"}, {"name": "tls", "target": "/etc/tls.key", "mode": "0400"}],
                "configs": [{"name": "app", "target": "/etc/app.conf"}],
            },
        }))
        .expect("task")
    }

    fn given(kind: &str, name: &str, data: &[u8]) -> pb::TaskFile {
        pb::TaskFile {
            kind: kind.into(),
            name: name.into(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn each_file_is_mounted_read_only_where_its_reference_says() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = RootfsLayout::new(dir.path());
        let mounter = Recorded::default();
        let files = [
            given("Secret", "db-pass", b"pw"),
            given("Secret", "tls", b"key"),
            given("Config", "app", b"conf"),
        ];
        let mounts = place(&layout, &task(), &files, &mounter).expect("placed");
        let targets: Vec<_> = mounts
            .iter()
            .map(|m| (m.target.as_str(), m.read_only))
            .collect();
        assert_eq!(
            targets,
            [
                ("/run/secrets/db-pass", true),
                ("/etc/tls.key", true),
                ("/etc/app.conf", true)
            ]
        );
        let tls = layout.files().join("1-secret-tls");
        assert_eq!(std::fs::read(&tls).expect("read"), b"key");
        let meta = std::fs::metadata(&tls).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        let app = std::fs::metadata(layout.files().join("2-config-app")).expect("meta");
        assert_eq!(app.permissions().mode() & 0o777, 0o444);
        assert_eq!(app.uid(), nix::unistd::getuid().as_raw());
        let calls = mounter.0.lock().expect("lock").clone();
        let files_dir = layout.files().display().to_string();
        assert_eq!(
            calls,
            [
                format!("unmount {files_dir}"),
                format!("tmpfs {files_dir} 65536")
            ],
            "the tmpfs is mounted before any file is written"
        );
    }

    #[test]
    fn a_value_named_twice_has_room_twice() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = RootfsLayout::new(dir.path());
        let mounter = Recorded::default();
        let mut t = task();
        t.spec.container.secrets = serde_json::from_value(serde_json::json!([
            {"name": "big"}, {"name": "big", "target": "/etc/big"}
        ]))
        .expect("refs");
        t.spec.container.configs.clear();
        let big = given("Secret", "big", &[7; 100_000]);
        let mounts = place(&layout, &t, &[big], &mounter).expect("placed");
        assert_eq!(mounts.len(), 2);
        let calls = mounter.0.lock().expect("lock").clone();
        assert!(
            calls.contains(&format!(
                "tmpfs {} {}",
                layout.files().display(),
                2 * (100_000 + PER_FILE)
            )),
            "{calls:?}"
        );
    }

    #[test]
    fn a_value_the_server_did_not_send_fails_the_start() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = RootfsLayout::new(dir.path());
        let err = place(
            &layout,
            &task(),
            &[given("Secret", "db-pass", b"pw")],
            &Recorded::default(),
        )
        .expect_err("tls is missing");
        assert!(err.contains("secret/tls"), "{err}");
    }
}
