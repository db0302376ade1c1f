//! Values that parsed but meant nothing are refused with a located error: constraint
//! operators that do not exist, cron schedules that never fire, durations no timer can
//! hold; and a BOM before the first document is not a problem.

use shoal_api::yaml::decode_manifests;

fn problems(text: &str) -> Vec<String> {
    match decode_manifests("s.yaml", text) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts one of `problems` is at `path` and says `says`.
fn assert_problem(problems: &[String], path: &str, says: &str) {
    assert!(
        problems
            .iter()
            .any(|e| e.contains(path) && e.contains(says)),
        "{path}: {says}: {problems:?}"
    );
}

fn service(spec: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  image: x\n{spec}"
    )
}

#[test]
fn an_operator_that_does_not_exist_is_refused() {
    let all = problems(&service(
        "  placement: {constraints: [\"node.labels.zone === eu\"]}\n",
    ));
    assert_problem(&all, "spec.placement.constraints[0]", "unknown operator");
    assert_eq!(
        problems(&service(
            "  placement: {constraints: [\"node.labels.zone == eu\"]}\n"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn a_cron_schedule_that_never_fires_is_refused() {
    let all = problems(&service(
        "  mode: cron\n  cron: {schedule: \"59 23 31 2 *\"}\n",
    ));
    assert_problem(&all, "spec.cron.schedule", "never fires");
    assert_eq!(
        problems(&service(
            "  mode: cron\n  cron: {schedule: \"59 23 29 2 *\"}\n"
        )),
        Vec::<String>::new(),
        "leap days come"
    );
}

#[test]
fn every_duration_field_is_bounded() {
    let all = problems(&service(
        "  update: {delay: 99999999999h, monitor: 99999999999h}\n  healthcheck: {cmd: [x], interval: 99999999999h}\n",
    ));
    for path in [
        "spec.update.delay",
        "spec.update.monitor",
        "spec.healthcheck.interval",
    ] {
        assert_problem(&all, path, "longer than a year");
    }
}

#[test]
fn a_byte_order_mark_is_not_a_problem() {
    let text = format!("\u{feff}{}", service(""));
    assert_eq!(problems(&text), Vec::<String>::new());
}

#[test]
fn image_references_and_env_are_bounded() {
    let all = problems(
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  image: \"::: not an image ref\"\n",
    );
    assert_problem(&all, "spec.image", "is not an image reference");
    let env: String = (0..1001).map(|i| format!("    V{i}: x\n")).collect();
    let all = problems(&service(&format!("  env:\n{env}")));
    assert_problem(&all, "spec.env", "1001 variables; at most 1000");
}

#[test]
fn image_references_are_read_as_registries_read_them() {
    let image = |r: &str| problems(&service("").replace("image: x", &format!("image: \"{r}\"")));
    for good in [
        "x",
        "local/busybox:1",
        "docker.io/library/busybox:1.36",
        "127.0.0.1:5000/app/web:v1.2.3-rc_1",
        "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(image(good), Vec::<String>::new(), "{good}");
    }
    for bad in ["Busybox", "a//b", "a:-tag", &"a".repeat(300)] {
        assert_problem(&image(bad), "spec.image", "is not an image reference");
    }
}
