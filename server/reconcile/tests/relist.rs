//! A reflector whose watch reports "history compacted" relists, and the relist finds
//! what the broken watch missed: deletions and creations alike.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_api::{kind_by_name, DynamicObject, Network, NetworkSpec, Resource};
use shoal_reconcile::{CancellationToken, Reflector};
use shoal_store::{
    BatchOp, EmbeddedStore, KeyValue, LeaseId, ListResult, ObjectStore, Result, Revision, Store,
    StoreError, TxnLimit, WatchStream,
};

/// The real embedded store, except that its first watch dies with `Compacted` after a
/// moment, as an etcd watch does when it falls behind a compaction.
struct CompactsFirstWatch {
    inner: EmbeddedStore,
    tripped: Mutex<bool>,
}

#[async_trait]
impl Store for CompactsFirstWatch {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResult> {
        self.inner.list(prefix).await
    }
    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision> {
        self.inner.create(key, value, lease).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Revision> {
        self.inner.update(key, value, expected, lease).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision> {
        self.inner.delete(key, expected).await
    }
    async fn transact(&self, ops: Vec<BatchOp>) -> Result<Vec<Revision>> {
        self.inner.transact(ops).await
    }
    fn txn_limit(&self) -> TxnLimit {
        self.inner.txn_limit()
    }
    async fn rename(
        &self,
        from: &str,
        expected: Revision,
        to: &str,
        value: Vec<u8>,
    ) -> Result<Revision> {
        self.inner.rename(from, expected, to, value).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let first = !std::mem::replace(&mut *self.tripped.lock().expect("lock"), true);
        if first {
            let fail = async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Err(StoreError::Compacted {
                    compact_revision: from + 1,
                })
            };
            return Ok(Box::pin(futures::stream::once(fail)));
        }
        self.inner.watch(prefix, from).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
    async fn revision(&self) -> Result<Revision> {
        self.inner.revision().await
    }
    fn backend(&self) -> &'static str {
        "embedded"
    }
}

fn network(name: &str) -> DynamicObject {
    DynamicObject::from_typed(&Network::new(name, NetworkSpec::default())).expect("object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_triggers_a_relist_that_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(CompactsFirstWatch {
        inner: EmbeddedStore::open(dir.path()).expect("open"),
        tripped: Mutex::new(false),
    });
    let objects = ObjectStore::new(store);
    objects.create(network("a"), None).await.expect("a");
    objects.create(network("b"), None).await.expect("b");

    let reflector = Reflector::<Network>::new(objects.clone());
    let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
    let d = deleted.clone();
    reflector.on_change(move |c| {
        if let shoal_reconcile::Change::Deleted(n) = c {
            d.lock().expect("lock").push(n.name().to_string());
        }
    });
    let reader = reflector.reader();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(reflector.run(shutdown.clone()));
    reader.wait_ready().await;
    assert_eq!(reader.len(), 2);

    // Changes the dying watch will never deliver.
    let kind = kind_by_name("Network").expect("kind");
    objects.delete(kind, "a").await.expect("delete a");
    objects.create(network("c"), None).await.expect("c");

    for _ in 0..100 {
        if reader.get("c").is_some() && reader.get("a").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut names: Vec<String> = reader.list().iter().map(|n| n.name().to_string()).collect();
    names.sort();
    assert_eq!(names, ["b", "c"], "the relist caught up");
    assert_eq!(
        *deleted.lock().expect("lock"),
        ["a"],
        "the missed deletion is reported"
    );

    // And the new watch is live.
    objects.create(network("d"), None).await.expect("d");
    for _ in 0..100 {
        if reader.get("d").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reader.get("d").is_some());
    shutdown.cancel();
    run.await.expect("reflector stops");
}
