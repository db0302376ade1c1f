//! Layers are untrusted: hostile tarballs are refused without touching anything outside
//! the layer, and whiteouts do what overlayfs expects (checked with a real overlay
//! mount, so these tests run as root, as `hack/test.sh` does).

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};
use shoal_agent::image::{
    unpack::unpack_layer, ImageError, ImageStore, LayerRecord, OverlayWhiteouts, UnpackError,
};

/// A tar entry written byte by byte, so hostile names get past the tar crate's own
/// checks (which is the point).
struct Entry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
        mode: 0o644,
    }
}

fn dir(name: &str) -> Entry<'_> {
    Entry {
        name,
        kind: tar::EntryType::Directory,
        link: "",
        data: b"",
        mode: 0o755,
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, to: &'a str) -> Entry<'a> {
    Entry {
        name,
        kind,
        link: to,
        data: b"",
        mode: 0o777,
    }
}

fn tarball(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, e.data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn refused(entries: &[Entry], why: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).expect("dest");
    match unpack_layer(&tarball(entries)[..], &dest, &OverlayWhiteouts) {
        Err(UnpackError::Refused { why: w, .. }) => assert!(w.contains(why), "{w}"),
        other => panic!("expected refusal ({why}), got {other:?}"),
    }
    // Nothing escaped: the temp dir holds only the layer dir (and what the test made).
    let outside: Vec<String> = fs::read_dir(tmp.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        outside.iter().all(|n| n == "layer" || n == "target"),
        "{outside:?}"
    );
}

#[test]
fn hostile_layers_are_refused() {
    refused(&[file("../escape", b"x")], "`..`");
    refused(&[file("a/../../escape", b"x")], "`..`");
    refused(&[file("/abs", b"x")], "absolute");
    // A symlink pointing out, then a write through it.
    let target = tempfile::tempdir().expect("target");
    let out = target.path().to_str().expect("path");
    refused(
        &[
            link("ln", tar::EntryType::Symlink, out),
            file("ln/pwned", b"x"),
        ],
        "symlink",
    );
    assert!(
        !target.path().join("pwned").exists(),
        "nothing written through the link"
    );
    refused(
        &[
            link("rel", tar::EntryType::Symlink, "../.."),
            file("rel/pwned", b"x"),
        ],
        "symlink",
    );
    // Hardlinks must name a file of this layer.
    refused(
        &[link("h", tar::EntryType::Link, "../../etc/passwd")],
        "hardlink",
    );
    refused(
        &[link("h", tar::EntryType::Link, "/etc/passwd")],
        "hardlink",
    );
    refused(&[link("h", tar::EntryType::Link, "missing")], "hardlink");
    refused(
        &[
            link("ln", tar::EntryType::Symlink, "/etc"),
            link("h", tar::EntryType::Link, "ln/passwd"),
        ],
        "symlink",
    );
    refused(&[file(".wh.", b"")], "whiteout");
}

#[test]
fn a_plain_layer_unpacks_with_its_diff_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bytes = tarball(&[
        dir("bin"),
        file("bin/tool", b"#!/bin/sh\n"),
        link("bin/sh", tar::EntryType::Symlink, "/bin/tool"),
        link("bin/hard", tar::EntryType::Link, "bin/tool"),
        file("deep/er/file", b"created parents"),
    ]);
    let u = unpack_layer(&bytes[..], tmp.path(), &OverlayWhiteouts).expect("unpack");
    assert_eq!(
        u.diff_id,
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
    );
    assert_eq!(
        fs::read(tmp.path().join("bin/hard")).expect("hard"),
        b"#!/bin/sh\n"
    );
    // Absolute symlink targets are fine: they resolve inside the container's root.
    assert_eq!(
        fs::read_link(tmp.path().join("bin/sh")).expect("link"),
        Path::new("/bin/tool")
    );
    assert!(tmp.path().join("deep/er/file").is_file());
}

#[test]
fn a_refused_layer_leaves_nothing_in_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(tmp.path()).expect("store");
    let bytes = tarball(&[file("ok", b"fine"), file("../escape", b"x")]);
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    store.put_blob(&bytes, &digest).expect("blob");
    let layer = LayerRecord {
        digest: digest.clone(),
        diff_id: digest,
        size: bytes.len() as u64,
    };
    match store.unpack(&layer, &OverlayWhiteouts) {
        Err(ImageError::Layer { source, .. }) => {
            assert!(source.to_string().contains("../escape"), "{source}")
        }
        other => panic!("expected a refused layer, got {other:?}"),
    }
    assert_eq!(
        fs::read_dir(tmp.path().join("layers/sha256"))
            .expect("ls")
            .count(),
        0
    );
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).expect("ls").count(), 0);
    // A layer whose content does not match its diff ID is refused too.
    let good = tarball(&[file("ok", b"fine")]);
    let good_digest = format!("sha256:{}", hex::encode(Sha256::digest(&good)));
    store.put_blob(&good, &good_digest).expect("blob");
    let lying = LayerRecord {
        digest: good_digest,
        diff_id: format!("sha256:{}", "0".repeat(64)),
        size: good.len() as u64,
    };
    assert!(matches!(
        store.unpack(&lying, &OverlayWhiteouts),
        Err(ImageError::DigestMismatch { .. })
    ));
    assert_eq!(
        fs::read_dir(tmp.path().join("layers/sha256"))
            .expect("ls")
            .count(),
        0
    );
}

#[test]
fn whiteouts_hide_lower_files_in_a_real_overlay() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "whiteouts and overlay mounts need root: run as root (hack/test.sh does)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let (lower, upper, merged) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("merged"),
    );
    for d in [&lower, &upper, &merged] {
        fs::create_dir(d).expect("dir");
    }
    let base = tarball(&[
        file("gone", b"1"),
        dir("dir"),
        file("dir/old", b"2"),
        file("kept", b"3"),
    ]);
    let change = tarball(&[
        file(".wh.gone", b""),
        dir("dir"),
        file("dir/.wh..wh..opq", b""),
        file("dir/new", b"4"),
    ]);
    unpack_layer(&base[..], &lower, &OverlayWhiteouts).expect("lower");
    unpack_layer(&change[..], &upper, &OverlayWhiteouts).expect("upper");
    let options = format!("lowerdir={}:{}", upper.display(), lower.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .expect("overlay mount");
    let seen = (
        merged.join("gone").exists(),
        merged.join("kept").exists(),
        fs::read_dir(merged.join("dir"))
            .map(|d| {
                d.map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    nix::mount::umount(&merged).expect("umount");
    assert_eq!(seen, (false, true, vec!["new".to_string()]));
}
