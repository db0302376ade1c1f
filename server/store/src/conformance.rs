//! The conformance suite every [`Store`] backend must pass. Each check runs under its
//! own key prefix, so one store (one etcd) can serve all of them.
//!
//! Backends call [`run_all`] from an integration test with a real store.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{EventType, Store, StoreError, WatchEvent, WatchStream};

type Check = fn(Arc<dyn Store>, String) -> futures::future::BoxFuture<'static, ()>;

/// Every check by name.
pub fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("create_get_update_delete", |s, p| Box::pin(crud(s, p))),
        ("list_by_prefix", |s, p| Box::pin(list_by_prefix(s, p))),
        ("watch_replays_history_then_live", |s, p| {
            Box::pin(watch_history_then_live(s, p))
        }),
        ("watch_from_now", |s, p| Box::pin(watch_from_now(s, p))),
        ("watch_without_prev_still_tells_what_changed", |s, p| {
            Box::pin(watch_without_prev(s, p))
        }),
        ("compaction_signals_relist", |s, p| {
            Box::pin(compaction(s, p))
        }),
        ("leases_expire_and_keep_alive", |s, p| {
            Box::pin(leases(s, p))
        }),
        ("compare_and_swap_under_contention", |s, p| {
            Box::pin(contention(s, p))
        }),
        ("batches_report_each_outcome", |s, p| {
            Box::pin(batches(s, p))
        }),
        ("rename_moves_a_key_in_one_step", |s, p| {
            Box::pin(rename(s, p))
        }),
        ("transactions_are_all_or_nothing", |s, p| {
            Box::pin(transactions(s, p))
        }),
    ]
}

/// Runs every check against `store`, each under `<prefix><check name>/`.
pub async fn run_all(store: Arc<dyn Store>, prefix: &str) {
    for (name, check) in checks() {
        eprintln!("conformance ({}): {name}", store.backend());
        check(store.clone(), format!("{prefix}{name}/")).await;
    }
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

async fn rename(store: Arc<dyn Store>, p: String) {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let ra = store
        .create(&a, b"one".to_vec(), None)
        .await
        .expect("create a");
    let rc = store
        .create(&c, b"taken".to_vec(), None)
        .await
        .expect("create c");
    let mut watch = store.watch(&p, rc + 1).await.expect("watch");
    // Each refusal leaves both keys as they were.
    let stale = store.rename(&a, ra + 100, &b, b"two".to_vec()).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let taken = store.rename(&a, ra, &c, b"two".to_vec()).await;
    assert!(
        matches!(&taken, Err(StoreError::AlreadyExists { key }) if *key == c),
        "{taken:?}"
    );
    let missing = store.rename(&b, 1, &format!("{p}d"), b"x".to_vec()).await;
    assert!(
        matches!(&missing, Err(StoreError::NotFound { key }) if *key == b),
        "{missing:?}"
    );
    assert_eq!(
        store.get(&a).await.expect("get").map(|kv| kv.value),
        Some(b"one".to_vec())
    );
    assert!(store.get(&b).await.expect("get").is_none());
    let moved = store
        .rename(&a, ra, &b, b"two".to_vec())
        .await
        .expect("rename");
    assert!(moved > ra);
    assert!(
        store.get(&a).await.expect("get").is_none(),
        "the old key is gone"
    );
    let kv = store
        .get(&b)
        .await
        .expect("get")
        .expect("the new key is there");
    assert_eq!(kv.value, b"two");
    // Watchers see the new key put and the old one deleted, nothing else.
    let first = next_event(&mut watch).await;
    let second = next_event(&mut watch).await;
    let mut seen = vec![
        (first.event_type, first.kv.key.clone()),
        (second.event_type, second.kv.key.clone()),
    ];
    seen.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(seen, vec![(EventType::Delete, a), (EventType::Put, b)]);
}

async fn crud(store: Arc<dyn Store>, p: String) {
    let k = format!("{p}a");
    let r1 = store
        .create(&k, b"one".to_vec(), None)
        .await
        .expect("create");
    assert!(
        matches!(
            store.create(&k, b"x".to_vec(), None).await,
            Err(StoreError::AlreadyExists { .. })
        ),
        "second create must fail"
    );
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"one"[..], r1, r1, 1)
    );

    let r2 = store
        .update(&k, b"two".to_vec(), r1, None)
        .await
        .expect("update");
    assert!(r2 > r1, "revisions grow");
    match store.update(&k, b"stale".to_vec(), r1, None).await {
        Err(StoreError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (r1, r2)),
        other => panic!("stale update must conflict, got {other:?}"),
    }
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"two"[..], r1, r2, 2)
    );
    assert!(matches!(
        store.update(&format!("{p}missing"), vec![], 1, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(&k, Some(r1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let r3 = store.delete(&k, Some(r2)).await.expect("delete");
    assert!(r3 > r2);
    assert_eq!(store.get(&k).await.expect("get"), None);
    assert!(matches!(
        store.delete(&k, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.revision().await.expect("revision") >= r3);
    // A deleted key can be created again, starting a new life.
    let r4 = store
        .create(&k, b"again".to_vec(), None)
        .await
        .expect("recreate");
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.version), (r4, 1));
}

async fn list_by_prefix(store: Arc<dyn Store>, p: String) {
    for name in ["c", "a", "b"] {
        store
            .create(&format!("{p}x/{name}"), name.as_bytes().to_vec(), None)
            .await
            .expect("create");
    }
    store
        .create(&format!("{p}xy"), vec![], None)
        .await
        .expect("create");
    let last = store
        .create(&format!("{p}y/a"), vec![], None)
        .await
        .expect("create");
    let list = store.list(&format!("{p}x/")).await.expect("list");
    let keys: Vec<_> = list
        .items
        .iter()
        .map(|kv| kv.key.trim_start_matches(&p).to_string())
        .collect();
    assert_eq!(keys, ["x/a", "x/b", "x/c"]);
    assert!(
        list.revision >= last,
        "list revision {} < last write {last}",
        list.revision
    );
    // Lists larger than any one response may be (etcd pages them).
    let big = vec![b'x'; 16 << 10];
    let mut tasks = Vec::new();
    for i in 0..600 {
        let (store, key, big) = (store.clone(), format!("{p}big/{i:04}"), big.clone());
        tasks.push(tokio::spawn(async move {
            store.create(&key, big, None).await.expect("create big")
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let listed = store.list(&format!("{p}big/")).await.expect("list big");
    assert_eq!(listed.items.len(), 600, "every key of a ~10 MiB list");
    assert!(
        listed.items.windows(2).all(|w| w[0].key < w[1].key),
        "sorted"
    );
    assert!(store
        .list(&format!("{p}none/"))
        .await
        .expect("list")
        .items
        .is_empty());
}

async fn watch_history_then_live(store: Arc<dyn Store>, p: String) {
    let k = format!("{p}w/a");
    let r1 = store.create(&k, b"1".to_vec(), None).await.expect("create");
    store
        .create(&format!("{p}other"), vec![], None)
        .await
        .expect("create other");
    let r2 = store
        .update(&k, b"2".to_vec(), r1, None)
        .await
        .expect("update");
    let mut w = store.watch(&format!("{p}w/"), r1).await.expect("watch");
    let e1 = next_event(&mut w).await;
    assert_eq!(
        (e1.event_type, e1.kv.mod_revision, e1.prev.clone()),
        (EventType::Put, r1, None)
    );
    let e2 = next_event(&mut w).await;
    assert_eq!(
        (e2.event_type, e2.kv.value.as_slice()),
        (EventType::Put, &b"2"[..])
    );
    assert_eq!(
        e2.prev.as_ref().map(|p| p.value.as_slice()),
        Some(&b"1"[..])
    );
    // Live from here on.
    let r3 = store.delete(&k, Some(r2)).await.expect("delete");
    let e3 = next_event(&mut w).await;
    assert_eq!((e3.event_type, e3.kv.mod_revision), (EventType::Delete, r3));
    assert_eq!(e3.prev.map(|p| p.value), Some(b"2".to_vec()));
    let r4 = store
        .create(&format!("{p}w/b"), vec![], None)
        .await
        .expect("create");
    assert_eq!(next_event(&mut w).await.kv.mod_revision, r4);
}

async fn watch_from_now(store: Arc<dyn Store>, p: String) {
    store
        .create(&format!("{p}old"), vec![], None)
        .await
        .expect("create");
    let mut w = store.watch(&p, 0).await.expect("watch");
    let r = store
        .create(&format!("{p}new"), vec![], None)
        .await
        .expect("create");
    let ev = next_event(&mut w).await;
    assert_eq!((ev.kv.key, ev.kv.mod_revision), (format!("{p}new"), r));
}

async fn watch_without_prev(store: Arc<dyn Store>, p: String) {
    let k = format!("{p}k");
    let mut w = store.watch_without_prev(&p, 0).await.expect("watch");
    let r1 = store.create(&k, b"1".to_vec(), None).await.expect("create");
    let r2 = store
        .update(&k, b"2".to_vec(), r1, None)
        .await
        .expect("update");
    let r3 = store.delete(&k, Some(r2)).await.expect("delete");
    let created = next_event(&mut w).await;
    assert_eq!(
        (created.event_type, created.kv.version, created.kv.value),
        (EventType::Put, 1, b"1".to_vec())
    );
    let updated = next_event(&mut w).await;
    assert_eq!(
        (
            updated.event_type,
            updated.kv.version,
            updated.kv.mod_revision
        ),
        (EventType::Put, 2, r2)
    );
    let deleted = next_event(&mut w).await;
    assert_eq!(
        (deleted.event_type, deleted.kv.key, deleted.kv.mod_revision),
        (EventType::Delete, k, r3)
    );
}

async fn compaction(store: Arc<dyn Store>, p: String) {
    let r1 = store
        .create(&format!("{p}a"), vec![], None)
        .await
        .expect("create");
    store
        .create(&format!("{p}b"), vec![], None)
        .await
        .expect("create");
    let r3 = store
        .create(&format!("{p}c"), vec![], None)
        .await
        .expect("create");
    store.compact(r3).await.expect("compact");
    match store.watch(&p, r1).await {
        Err(StoreError::Compacted { .. }) => {}
        Ok(mut w) => match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => panic!("watch from a compacted revision must say Compacted, got {other:?}"),
        },
        Err(other) => panic!("expected Compacted, got {other}"),
    }
    let mut w = store
        .watch(&p, r3)
        .await
        .expect("watch from the compaction point");
    assert_eq!(next_event(&mut w).await.kv.mod_revision, r3);
}

async fn leases(store: Arc<dyn Store>, p: String) {
    let ttl = Duration::from_secs(2);
    let lease = store.grant_lease(ttl).await.expect("grant");
    let k = format!("{p}leased");
    store
        .create(&k, vec![], Some(lease))
        .await
        .expect("create with lease");
    assert_eq!(
        store.get(&k).await.expect("get").map(|kv| kv.lease),
        Some(lease)
    );
    let mut w = store.watch(&p, 0).await.expect("watch");
    // Kept alive for longer than its TTL, the key stays.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.keep_alive(lease).await.expect("keep alive");
    }
    assert!(
        store.get(&k).await.expect("get").is_some(),
        "kept-alive key must stay"
    );
    // Left alone, it expires with a delete event.
    let ev = match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected the lease's key to expire, got {other:?}"),
    };
    assert_eq!(
        (ev.event_type, ev.kv.key.as_str()),
        (EventType::Delete, k.as_str())
    );
    assert!(store.get(&k).await.expect("get").is_none());
    let ka = store.keep_alive(lease).await;
    assert!(
        matches!(ka, Err(StoreError::LeaseNotFound(_))),
        "keep-alive of an expired lease: {ka:?}"
    );
    assert!(
        store
            .create(&format!("{p}x"), vec![], Some(lease))
            .await
            .is_err(),
        "expired lease is unusable"
    );
    // Revoking deletes at once.
    let lease = store.grant_lease(ttl).await.expect("grant");
    store.create(&k, vec![], Some(lease)).await.expect("create");
    store.revoke_lease(lease).await.expect("revoke");
    assert!(store.get(&k).await.expect("get").is_none());
}

async fn contention(store: Arc<dyn Store>, p: String) {
    let k = format!("{p}counter");
    store.create(&k, b"0".to_vec(), None).await.expect("create");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, k) = (store.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let kv = store.get(&k).await.expect("get").expect("present");
                    let n: u64 = String::from_utf8_lossy(&kv.value).parse().expect("number");
                    match store
                        .update(&k, (n + 1).to_string().into_bytes(), kv.mod_revision, None)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!(
        kv.value,
        b"80".to_vec(),
        "every increment counted exactly once"
    );
    assert_eq!(kv.version, 81);
}

async fn batches(store: Arc<dyn Store>, p: String) {
    use crate::BatchOp;
    // All good: every op lands.
    let ops: Vec<BatchOp> = (0..50)
        .map(|i| BatchOp::Create {
            key: format!("{p}k{i:02}"),
            value: vec![1],
            lease: None,
        })
        .collect();
    let results = store.batch(ops).await.expect("batch");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(store.list(&p).await.expect("list").items.len(), 50);
    // Mixed: a duplicate create and a stale update fail alone; the rest land.
    let kv = store
        .get(&format!("{p}k00"))
        .await
        .expect("get")
        .expect("present");
    let ops = vec![
        BatchOp::Update {
            key: format!("{p}k00"),
            value: vec![2],
            expected: kv.mod_revision,
            lease: None,
        },
        BatchOp::Create {
            key: format!("{p}k01"),
            value: vec![9],
            lease: None,
        },
        BatchOp::Update {
            key: format!("{p}k02"),
            value: vec![9],
            expected: 1,
            lease: None,
        },
        BatchOp::Create {
            key: format!("{p}new"),
            value: vec![3],
            lease: None,
        },
        BatchOp::Update {
            key: format!("{p}absent"),
            value: vec![4],
            expected: 5,
            lease: None,
        },
    ];
    let results = store.batch(ops).await.expect("batch");
    assert!(
        matches!(results[4], Err(StoreError::NotFound { .. })),
        "{results:?}"
    );
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::AlreadyExists { .. })),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(StoreError::Conflict { .. })),
        "{results:?}"
    );
    assert!(results[3].is_ok(), "{results:?}");
    assert_eq!(
        store
            .get(&format!("{p}k00"))
            .await
            .expect("get")
            .map(|kv| kv.value),
        Some(vec![2])
    );
    assert_eq!(
        store
            .get(&format!("{p}k01"))
            .await
            .expect("get")
            .map(|kv| kv.value),
        Some(vec![1])
    );
    assert!(store.get(&format!("{p}new")).await.expect("get").is_some());
}

async fn transactions(store: Arc<dyn Store>, p: String) {
    use crate::BatchOp;
    let put = |k: &str, v: u8| BatchOp::Create {
        key: format!("{p}{k}"),
        value: vec![v],
        lease: None,
    };
    let update = |k: &str, v: u8, expected| BatchOp::Update {
        key: format!("{p}{k}"),
        value: vec![v],
        expected,
        lease: None,
    };
    let delete = |k: &str, expected| BatchOp::Delete {
        key: format!("{p}{k}"),
        expected,
    };
    let old = store
        .create(&format!("{p}old"), vec![0], None)
        .await
        .expect("create");
    let gone = store
        .create(&format!("{p}gone"), vec![0], None)
        .await
        .expect("create");
    let mut watch = store.watch(&p, gone + 1).await.expect("watch");
    // A key twice is refused; one failed precondition, wherever it is, writes nothing.
    let failing = vec![
        put("a", 1),
        update("old", 1, old),
        delete("gone", gone),
        update("old", 2, old),
    ];
    match store.transact(failing).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("a key twice in one transaction must be refused, got {other:?}"),
    }
    let failing = vec![put("a", 1), delete("gone", gone), put("old", 2)];
    match store.transact(failing).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, format!("{p}old")),
        other => panic!("expected the failing op's AlreadyExists, got {other:?}"),
    }
    let stale = vec![put("a", 1), update("old", 1, old - 1)];
    assert!(matches!(
        store.transact(stale).await,
        Err(StoreError::Conflict { .. })
    ));
    let listed = store.list(&p).await.expect("list");
    let keys: Vec<&str> = listed.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [format!("{p}gone"), format!("{p}old")],
        "a failed transaction wrote nothing"
    );
    assert_eq!(listed.revision, gone, "nor moved the revision");
    // All preconditions hold: every write lands, and one list shows them all.
    let revs = store
        .transact(vec![
            put("a", 1),
            put("b", 1),
            update("old", 1, old),
            delete("gone", gone),
        ])
        .await
        .expect("transact");
    assert_eq!(revs.len(), 4);
    let rev = *revs.iter().max().expect("four");
    let listed = store.list(&p).await.expect("list");
    for kv in &listed.items {
        assert!(
            revs.contains(&kv.mod_revision),
            "{kv:?} not at a revision transact gave"
        );
    }
    let found: Vec<(String, Vec<u8>)> = listed
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(
        found,
        [
            (format!("{p}a"), vec![1]),
            (format!("{p}b"), vec![1]),
            (format!("{p}old"), vec![1]),
        ]
    );
    assert!(listed.revision >= rev);
    // Watchers see the four changes, and nothing of the failed tries.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = next_event(&mut watch).await;
        assert!(ev.revision() <= rev, "{ev:?} after the transaction's {rev}");
        seen.push((ev.kv.key, ev.event_type));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            (format!("{p}a"), EventType::Put),
            (format!("{p}b"), EventType::Put),
            (format!("{p}gone"), EventType::Delete),
            (format!("{p}old"), EventType::Put),
        ]
    );
}
