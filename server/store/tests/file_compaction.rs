//! The embedded store gives space back: once compaction has dropped history that
//! filled most of the file, the file shrinks, and what is stored stays readable and
//! writable.

use shoal_store::{BatchOp, EmbeddedStore, Store};

fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("store.redb")).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_shrinks_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    store
        .create("/keep", b"kept".to_vec(), None)
        .await
        .expect("create");
    // 3,000 objects of 4 KiB written and deleted: 24 MiB of history, nothing live.
    let value = vec![7u8; 4096];
    let creates = (0..3000)
        .map(|i| BatchOp::Create {
            key: format!("/churn/{i}"),
            value: value.clone(),
            lease: None,
        })
        .collect();
    let revs: Vec<i64> = store
        .batch(creates)
        .await
        .expect("batch")
        .into_iter()
        .map(|r| r.expect("create"))
        .collect();
    let deletes = revs
        .iter()
        .enumerate()
        .map(|(i, &rev)| BatchOp::Delete {
            key: format!("/churn/{i}"),
            expected: rev,
        })
        .collect();
    for r in store.batch(deletes).await.expect("batch") {
        r.expect("delete");
    }
    let grown = file_len(dir.path());
    assert!(
        grown > 20 << 20,
        "the history should fill the file: {grown}"
    );
    let now = store.revision().await.expect("revision");
    store.compact(now).await.expect("compact");
    // The writer compacts the file after it has answered.
    let mut shrunk = file_len(dir.path());
    for _ in 0..100 {
        if shrunk < grown / 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        shrunk = file_len(dir.path());
    }
    eprintln!("store.redb: {grown} bytes with the history, {shrunk} after compaction");
    assert!(
        shrunk < grown / 4,
        "the file kept its size after compaction: {grown} → {shrunk}"
    );
    let kept = store.get("/keep").await.expect("get").expect("still there");
    assert_eq!(kept.value, b"kept");
    store
        .update("/keep", b"again".to_vec(), kept.mod_revision, None)
        .await
        .expect("still writable");
    drop(store);
    // The writer thread closes the file a moment after the store is dropped.
    let mut reopened = EmbeddedStore::open(dir.path());
    for _ in 0..50 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        reopened = EmbeddedStore::open(dir.path());
    }
    let reopened = reopened.expect("reopen");
    assert_eq!(
        reopened.get("/keep").await.expect("get").map(|kv| kv.value),
        Some(b"again".to_vec())
    );
}
