//! The tail input on real files: lines once whole, rotation by rename and by
//! copytruncate with nothing lost or repeated, positions that advance only when
//! committed, and a file rotated while nobody followed it read to its end.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use shoal_logs::tail::Tail;

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("write");
}

fn texts(tail: &mut Tail) -> Vec<String> {
    tail.poll()
        .expect("poll")
        .into_iter()
        .map(|l| l.text)
        .collect()
}

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i}\n")).collect()
}

fn expect(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line {i}")).collect()
}

#[test]
fn a_line_comes_out_once_its_newline_has_arrived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let mut tail = Tail::open(
        &format!("{}/*.log", dir.path().display()),
        &dir.path().join("pos"),
        64,
    )
    .expect("open");
    append(&log, "first\nsec");
    assert_eq!(texts(&mut tail), ["first"]);
    append(&log, "ond\r\n");
    assert_eq!(texts(&mut tail), ["second"]);
    append(&log, &"x".repeat(150));
    assert_eq!(texts(&mut tail).len(), 2, "a long line in pieces of 64");
    append(&dir.path().join("other.txt"), "not matched\n");
    append(&log, "\n");
    assert_eq!(texts(&mut tail), ["x".repeat(22)]);
}

#[test]
fn rotation_by_rename_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let glob = format!("{}/app.log", dir.path().display());
    let mut tail = Tail::open(&glob, &dir.path().join("pos"), 1024).expect("open");
    append(&log, &numbered(0, 100));
    let mut got = texts(&mut tail);
    // Written after the last poll, then rotated: still in the old inode.
    append(&log, &numbered(100, 150));
    append(&log, "no newline at the end");
    fs::rename(&log, dir.path().join("app.log.1")).expect("rotate");
    append(&log, &numbered(150, 200));
    got.extend(texts(&mut tail));
    let mut want = expect(0, 150);
    want.push("no newline at the end".into());
    want.extend(expect(150, 200));
    assert_eq!(got, want);
}

#[test]
fn a_file_renamed_to_a_name_the_glob_also_takes_is_not_read_again() {
    // Docker's json-file and shoal's monitors rotate `container.log` to `.1`, `.1`
    // to `.2`, and the tasks input follows `container.log*`.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("container.log");
    let glob = format!("{}/container.log*", dir.path().display());
    let mut tail = Tail::open(&glob, &dir.path().join("pos"), 1024).expect("open");
    let mut got = Vec::new();
    for round in 0..3 {
        append(&log, &numbered(round * 100, round * 100 + 90));
        got.extend(texts(&mut tail));
        append(&log, &numbered(round * 100 + 90, round * 100 + 100));
        if dir.path().join("container.log.1").exists() {
            fs::rename(
                dir.path().join("container.log.1"),
                dir.path().join("container.log.2"),
            )
            .expect("rotate .1");
        }
        fs::rename(&log, dir.path().join("container.log.1")).expect("rotate");
        got.extend(texts(&mut tail));
    }
    assert_eq!(got, expect(0, 300), "each line once, in order");
}

#[test]
fn copytruncate_reads_the_file_again_from_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let glob = format!("{}/app.log", dir.path().display());
    let mut tail = Tail::open(&glob, &dir.path().join("pos"), 1024).expect("open");
    append(&log, &numbered(0, 50));
    let mut got = texts(&mut tail);
    fs::copy(&log, dir.path().join("app.log.1")).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&log, &numbered(50, 60));
    got.extend(texts(&mut tail));
    assert_eq!(got, expect(0, 60));
}

#[test]
fn a_restart_resumes_from_the_last_commit_not_from_the_last_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let glob = format!("{}/app.log", dir.path().display());
    let pos = dir.path().join("pos");
    append(&log, &numbered(0, 10));
    {
        let mut tail = Tail::open(&glob, &pos, 1024).expect("open");
        assert_eq!(texts(&mut tail), expect(0, 10));
        tail.commit().expect("commit");
        append(&log, &numbered(10, 20));
        assert_eq!(texts(&mut tail), expect(10, 20));
        // Not committed: the process dies before these were durable downstream.
    }
    let mut tail = Tail::open(&glob, &pos, 1024).expect("reopen");
    assert_eq!(texts(&mut tail), expect(10, 20), "again, and only those");
}

#[test]
fn a_file_rotated_while_nobody_followed_it_is_read_to_its_end_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let glob = format!("{}/app.log", dir.path().display());
    let pos = dir.path().join("pos");
    append(&log, &numbered(0, 10));
    {
        let mut tail = Tail::open(&glob, &pos, 1024).expect("open");
        assert_eq!(texts(&mut tail), expect(0, 10));
        tail.commit().expect("commit");
    }
    // While the pipeline is down: more lines, a rotation, lines in the new file.
    append(&log, &numbered(10, 20));
    fs::rename(&log, dir.path().join("app.log.1")).expect("rotate");
    append(&log, &numbered(20, 30));
    let mut tail = Tail::open(&glob, &pos, 1024).expect("reopen");
    assert_eq!(texts(&mut tail), expect(10, 30));
    tail.commit().expect("commit");
    drop(tail);
    let mut tail = Tail::open(&glob, &pos, 1024).expect("again");
    assert!(texts(&mut tail).is_empty(), "nothing twice");
}
