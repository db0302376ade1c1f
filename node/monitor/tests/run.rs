//! The monitor around a real process standing in for the OCI runtime (a shell script
//! taking runc's arguments): both pipes reach the log, line by line, long output is
//! split, the last unterminated line is kept, and the exit code is recorded.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shoal_monitor::{Exit, LogLine, MonitorConfig, LOG_FILE, MAX_LINE};

fn runtime(dir: &Path, script: &str) -> MonitorConfig {
    let path = dir.join("fake-runtime");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    MonitorConfig {
        dir: dir.to_path_buf(),
        id: "shoal-test".into(),
        runtime: path.display().to_string(),
        runtime_root: dir.join("root"),
        max_size: 0,
        max_files: 1,
    }
}

fn log_lines(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .expect("log")
        .lines()
        .map(|l| {
            let line: LogLine = serde_json::from_str(l).expect("a json-file line");
            (line.stream, line.log)
        })
        .collect()
}

#[test]
fn both_streams_are_logged_and_the_exit_code_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = runtime(
        dir.path(),
        "echo out1; echo err1 >&2; sleep 0.1; echo out2; printf tail >&2; exit 3",
    );
    assert_eq!(shoal_monitor::run_monitor(&config).expect("runs"), 3);
    let mut lines = log_lines(dir.path());
    // The two pipes race each other; within a stream the order is kept.
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<(String, String)> = [
        ("stderr", "err1\n"),
        ("stderr", "tail"),
        ("stdout", "out1\n"),
        ("stdout", "out2\n"),
    ]
    .iter()
    .map(|(s, l)| (s.to_string(), l.to_string()))
    .collect();
    assert_eq!(lines, want);
    let exit = Exit::read(dir.path()).expect("exit.json");
    assert_eq!(exit.exit_code, 3);
}

#[test]
fn output_without_newlines_is_split_at_the_line_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = 2 * MAX_LINE + 1000;
    let config = runtime(
        dir.path(),
        &format!("head -c {total} /dev/zero | tr '\\0' x; echo; echo after"),
    );
    assert_eq!(shoal_monitor::run_monitor(&config).expect("runs"), 0);
    let sizes: Vec<usize> = log_lines(dir.path()).iter().map(|(_, l)| l.len()).collect();
    assert_eq!(sizes, [MAX_LINE, MAX_LINE, 1001, 6]);
}

#[test]
fn a_killed_runtime_exits_as_128_plus_the_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = runtime(dir.path(), "echo bye; kill -9 $$");
    assert_eq!(shoal_monitor::run_monitor(&config).expect("runs"), 137);
    assert_eq!(
        log_lines(dir.path()),
        [("stdout".to_string(), "bye\n".to_string())]
    );
}
