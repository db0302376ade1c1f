//! `shoal image` end to end, against a real registry (docker-registry on loopback)
//! holding the test image that `hack/build-test-image.sh` builds from busybox-static:
//! pull (verified, unpacked), ls, import of an OCI layout and of a `docker save`
//! archive, rm with garbage collection, and clear failures.

use std::path::Path;
use std::process::{Command, Output};

use shoal_testkit::Registry;

fn shoal(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run shoal")
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "shoal failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[track_caller]
fn fails(out: Output) -> String {
    assert!(!out.status.success(), "shoal should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn names(data: &Path) -> Vec<String> {
    ok(shoal(data, &["image", "ls", "-o", "name"]))
        .lines()
        .map(str::to_string)
        .collect()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn images_pull_import_list_and_remove() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("node");

    // Pull: progress on stderr, the image unpacked and listed under its full name.
    let out = shoal(&data, &["image", "pull", &registry.image()]);
    let progress = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = ok(out);
    assert!(stdout.contains("pulled"), "{stdout}");
    assert!(progress.contains("downloading"), "{progress}");
    assert!(progress.contains("unpacked"), "{progress}");
    assert_eq!(names(&data), [registry.image()]);
    let layers = data.join("images/layers/sha256");
    let layer = std::fs::read_dir(&layers)
        .expect("layers")
        .next()
        .expect("one layer")
        .expect("entry")
        .path();
    assert!(layer.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(shoal(&data, &["image", "ls", "-o", "json"]))).expect("json");
    assert_eq!(
        listed["items"][0]["layers"].as_array().map(Vec::len),
        Some(1)
    );

    // Pulling again fetches nothing.
    let again = shoal(&data, &["image", "pull", &registry.image()]);
    let progress = String::from_utf8_lossy(&again.stderr).to_string();
    ok(again);
    assert!(progress.contains("already present"), "{progress}");

    // Import the same image as an OCI layout tar (it names no image: --name does).
    let layout_tar = tmp.path().join("layout.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(registry.oci_layout())
        .arg("-cf")
        .arg(&layout_tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let err = fails(shoal(
        &data,
        &["image", "import", layout_tar.to_str().expect("path")],
    ));
    assert!(err.contains("give --name"), "{err}");
    ok(shoal(
        &data,
        &[
            "image",
            "import",
            layout_tar.to_str().expect("path"),
            "--name",
            "local/busybox:1",
        ],
    ));
    // And as a `docker save` archive, made by skopeo from the same layout.
    let saved = tmp.path().join("saved.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:1", registry.oci_layout().display()))
        .arg(format!(
            "docker-archive:{}:shoal-test/saved:2",
            saved.display()
        ))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(shoal(
        &data,
        &["image", "import", saved.to_str().expect("path")],
    ));
    let mut want = vec![
        registry.image(),
        "docker.io/local/busybox:1".to_string(),
        "docker.io/shoal-test/saved:2".to_string(),
    ];
    want.sort();
    assert_eq!(names(&data), want);
    // The layout and the registry copy share their layer; the docker archive's layer is
    // the same content uncompressed, so it unpacks to the same diff ID.
    assert_eq!(entries(&layers), 1);

    // rm keeps what other images still use, and collects the rest.
    let blobs = data.join("images/blobs/sha256");
    let before = entries(&blobs);
    ok(shoal(&data, &["image", "rm", "shoal-test/saved:2"]));
    assert!(
        entries(&blobs) < before,
        "the saved image's own blobs are gone"
    );
    assert_eq!(entries(&layers), 1, "the shared layer stays");
    ok(shoal(
        &data,
        &["image", "rm", "local/busybox:1", &registry.image()],
    ));
    assert!(names(&data).is_empty());
    assert_eq!(entries(&blobs), 0);
    assert_eq!(entries(&layers), 0);

    // Clear failures, non-zero exits, nothing recorded.
    let err = fails(shoal(
        &data,
        &[
            "image",
            "pull",
            &format!("{}/shoal-test/nope:1", registry.address()),
        ],
    ));
    assert!(err.contains("manifest unknown"), "{err}");
    let err = fails(shoal(&data, &["image", "rm", "never/pulled:1"]));
    assert!(err.contains("not in the local store"), "{err}");
    let err = fails(shoal(&data, &["image", "pull", "busybox:no spaces"]));
    assert!(err.contains("image reference"), "{err}");
    assert!(names(&data).is_empty());
}
