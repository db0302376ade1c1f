//! The embedded store keeps what it acknowledged: across a clean restart, and across
//! `kill -9` in the middle of a stream of writes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use shoal_store::{EmbeddedStore, Store};

fn open_retrying(dir: &std::path::Path) -> EmbeddedStore {
    // The previous owner's writer thread may still be closing the file.
    for _ in 0..50 {
        if let Ok(s) = EmbeddedStore::open(dir) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    EmbeddedStore::open(dir).expect("reopen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_and_revisions_grow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        for i in 0..20 {
            store
                .create(&format!("/k/{i}"), vec![i as u8], None)
                .await
                .expect("create");
        }
        let lease = store
            .grant_lease(Duration::from_secs(60))
            .await
            .expect("lease");
        store
            .create("/leased", vec![], Some(lease))
            .await
            .expect("leased");
        store.revision().await.expect("revision")
    };
    let store = open_retrying(dir.path());
    assert_eq!(store.revision().await.expect("revision"), last);
    assert_eq!(store.list("/k/").await.expect("list").items.len(), 20);
    assert!(
        store.get("/leased").await.expect("get").is_some(),
        "leases survive a restart"
    );
    let next = store.create("/after", vec![], None).await.expect("create");
    assert!(next > last, "revision {next} must be above {last}");
    // Watch history survives too.
    use futures::StreamExt;
    let mut w = store.watch("/k/", 1).await.expect("watch");
    let first = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("event")
        .expect("some")
        .expect("ok");
    assert_eq!(first.kv.key, "/k/0");
}

#[tokio::test]
async fn second_process_cannot_open_the_same_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = EmbeddedStore::open(dir.path()).expect("open");
    let err = EmbeddedStore::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("in use"), "{err}");
}

const CHILD_ENV: &str = "SHOAL_STORE_CRASH_CHILD_DIR";

/// Not a test on its own: the writer process that `kill_9_loses_no_acknowledged_write`
/// starts (with `--ignored`) and kills. It prints each key once the store has
/// acknowledged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kill_9_loses_no_acknowledged_write"]
async fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("started by kill_9_loses_no_acknowledged_write");
    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&dir)).expect("open"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for w in 0..8 {
        let (store, tx) = (store.clone(), tx.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/crash/{w}/{i}");
                store
                    .create(&key, vec![7; 512], None)
                    .await
                    .expect("create");
                if tx.send(key).is_err() {
                    return;
                }
            }
        });
    }
    let mut out = std::io::stdout().lock();
    while let Some(key) = rx.recv().await {
        writeln!(out, "acked {key}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    while acked.len() < 2000 {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(key) = line.strip_prefix("acked ") {
                    acked.push(key.to_string());
                }
            }
            other => panic!("child stopped early: {other:?}"),
        }
    }
    child.kill().expect("kill -9");
    // Lines already written were acknowledged before the kill.
    for line in lines.map_while(Result::ok) {
        if let Some(key) = line.strip_prefix("acked ") {
            acked.push(key.to_string());
        }
    }
    child.wait().expect("reap");
    let store = open_retrying(dir.path());
    let keys: std::collections::HashSet<String> = store
        .list("/crash/")
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|k| !keys.contains(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}
