//! A container from a real image through real runc: the test image imported into the
//! store, its layers mounted as an overlay with a writable layer, and the runtime spec
//! shoal writes run by `runc run`. What the process sees inside is what Docker users
//! expect by default: 14 capabilities, no_new_privs, a seccomp filter, its own
//! hostname, the image's environment, and writes that stay in its own layer.

use std::path::Path;
use std::process::Command;

use shoal_agent::container::{make_bundle, ContainerRequest, Overlay, RootfsLayout};
use shoal_agent::image::{self, ImageStore};
use shoal_api::ContainerSpec;

fn run_container(store: &ImageStore, name: &str, dir: &Path, req: ContainerRequest) -> String {
    let record = store.get(name).expect("index").expect("image present");
    let layout = RootfsLayout::new(dir);
    make_bundle(store, &record, &req, &layout, &Overlay).expect("bundle");
    let id = format!("shoal-test-{}", std::process::id());
    let out = Command::new("runc")
        .arg("--root")
        .arg(dir.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(dir)
        .arg(&id)
        .output()
        .expect("runc (hack/test.sh installs it)");
    layout.remove(&Overlay).expect("remove rootfs");
    assert!(
        out.status.success(),
        "runc run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} not in output:\n{out}"))
}

#[tokio::test]
async fn a_real_container_runs_with_secure_defaults() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "containers need root: run as root (hack/test.sh does)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("layout");
    shoal_testkit::build_test_image(&layout);
    let tarball = tmp.path().join("image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let store = ImageStore::open(&tmp.path().join("images")).expect("store");
    image::import_archive(&store, &tarball, Some("local/busybox:1"))
        .await
        .expect("import");
    let name = image::normalize("local/busybox:1").expect("name");

    let script = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  echo host: $(hostname); echo path: $PATH; echo greeting: $GREETING; \
                  echo uid: $(id -u); echo written > /tmp/mine; cat /tmp/mine; \
                  mount -t tmpfs none /mnt 2>/dev/null && echo mount: allowed || echo mount: refused";
    let out = run_container(
        &store,
        &name,
        &tmp.path().join("c1"),
        ContainerRequest {
            container: ContainerSpec {
                command: vec!["sh".into(), "-c".into(), script.into()],
                env: [("GREETING".to_string(), "hello".to_string())].into(),
                ..Default::default()
            },
            hostname: "web-1".into(),
            ..Default::default()
        },
    );
    // Docker's 14 default capabilities, exactly.
    assert_eq!(field(&out, "CapEff:"), "00000000a80425fb", "{out}");
    assert_eq!(field(&out, "NoNewPrivs:"), "1");
    assert_eq!(field(&out, "Seccomp:"), "2", "a seccomp filter is on");
    assert_eq!(field(&out, "host:"), "web-1");
    assert_eq!(field(&out, "path:"), "/bin", "the image's PATH");
    assert_eq!(field(&out, "greeting:"), "hello", "the task's env");
    assert_eq!(field(&out, "uid:"), "0");
    assert!(out.contains("written"), "{out}");
    assert_eq!(
        field(&out, "mount:"),
        "refused",
        "no CAP_SYS_ADMIN, mount denied"
    );

    // The image's user database resolves names; the write above stayed in c1's layer.
    let out = run_container(
        &store,
        &name,
        &tmp.path().join("c2"),
        ContainerRequest {
            container: ContainerSpec {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo uid: $(id -u); cat /tmp/mine 2>/dev/null || echo clean: yes".into(),
                ],
                user: Some("nobody".into()),
                ..Default::default()
            },
            hostname: "web-2".into(),
            ..Default::default()
        },
    );
    assert_eq!(field(&out, "uid:"), "65534");
    assert_eq!(field(&out, "clean:"), "yes", "{out}");
    // The layer itself was never written to.
    let layer = store
        .layer_dir(&store.get(&name).expect("index").expect("image").layers[0].diff_id)
        .expect("layer");
    assert!(!layer.join("tmp/mine").exists());
}
