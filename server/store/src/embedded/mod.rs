//! The embedded backend: redb in `<data-dir>/store.redb`.
//!
//! redb gives crash-safe, fsynced transactions (copy-on-write B-trees with a
//! checksummed commit slot), so an acknowledged write survives `kill -9` and power loss.
//! On top of it this module keeps etcd's model: a global revision, per-key
//! create/mod revisions and versions, a change log that watches read from, and leases.

mod db;
mod records;
mod watch;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_trait::async_trait;
use redb::TableDefinition;
use tokio::sync::{broadcast, oneshot};

use crate::{
    BatchOp, KeyValue, LeaseId, ListResult, Result, Revision, Store, StoreError, TxnLimit,
    WatchEvent, WatchStream,
};
use db::Db;
use records::decode_kv;
use writer::{Op, Request, Writer};

pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
pub(crate) const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
pub(crate) const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");

/// How many live events a slow watcher may fall behind before it re-reads the log.
const EVENT_BUFFER: usize = 8192;

/// State the writer publishes and readers consult.
pub(crate) struct Shared {
    pub revision: AtomicI64,
    pub compacted: AtomicI64,
    pub events: broadcast::Sender<Arc<WatchEvent>>,
}

pub struct EmbeddedStore {
    db: Arc<Db>,
    shared: Arc<Shared>,
    writer: mpsc::Sender<Request>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("store writer stopped".into())
}

pub(crate) fn backend_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. Only one process may hold it open.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("store.redb");
        let db = redb::Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{} is in use by another shoal process",
                path.display()
            )),
            other => StoreError::Unavailable(format!("cannot open {}: {other}", path.display())),
        })?;
        let db = Arc::new(Db::new(db));
        {
            // Make sure every table exists so readers never see "table missing".
            let txn = db.begin_write()?;
            txn.open_table(KV).map_err(backend_err)?;
            txn.open_table(LOG).map_err(backend_err)?;
            txn.open_table(META).map_err(backend_err)?;
            txn.open_table(LEASES).map_err(backend_err)?;
            txn.commit().map_err(backend_err)?;
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            events,
        });
        let writer = Writer::load(db.clone(), shared.clone(), path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(EmbeddedStore {
            db,
            shared,
            writer: tx,
        })
    }

    /// Queues `op` for the writer; the receiver gets its outcome after the commit.
    fn enqueue(&self, op: Op) -> Result<oneshot::Receiver<Result<i64>>> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Request { op, reply })
            .map_err(|_| stopped())?;
        Ok(rx)
    }

    async fn send(&self, op: Op) -> Result<i64> {
        self.enqueue(op)?.await.map_err(|_| stopped())?
    }

    fn read_list(db: &Db, prefix: &str) -> Result<ListResult> {
        let txn = db.begin_read()?;
        let revision = txn
            .open_table(META)
            .map_err(backend_err)?
            .get("revision")
            .map_err(backend_err)?
            .map(|v| v.value())
            .unwrap_or(0);
        let table = txn.open_table(KV).map_err(backend_err)?;
        let mut items = Vec::new();
        for entry in table.range(prefix..).map_err(backend_err)? {
            let (k, v) = entry.map_err(backend_err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            items.push(decode_kv(k.value(), v.value())?);
        }
        Ok(ListResult { items, revision })
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV).map_err(backend_err)?;
        let value = table.get(key).map_err(backend_err)?;
        value.map(|v| decode_kv(key, v.value())).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<ListResult> {
        let db = self.db.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || Self::read_list(&db, &prefix))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision> {
        self.send(Op::Write(BatchOp::Create {
            key: key.to_string(),
            value,
            lease,
        }))
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Revision> {
        self.send(Op::Write(BatchOp::Update {
            key: key.to_string(),
            value,
            expected,
            lease,
        }))
        .await
    }

    async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<Result<Revision>>> {
        // Queue them all before waiting: the writer commits them together.
        let mut replies = Vec::with_capacity(ops.len());
        for op in ops {
            replies.push(self.enqueue(Op::Write(op))?);
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(rx.await.map_err(|_| stopped())?);
        }
        Ok(out)
    }

    async fn transact(&self, ops: Vec<BatchOp>) -> Result<Vec<Revision>> {
        // The writer answers with the last op's revision; the ops before it took the
        // revisions just below, one each.
        let n = ops.len() as i64;
        let last = self.send(Op::Transact(ops)).await?;
        Ok((last - n + 1..=last).collect())
    }

    fn txn_limit(&self) -> TxnLimit {
        // One redb commit holds any number of writes.
        TxnLimit {
            ops: usize::MAX,
            bytes: usize::MAX,
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision> {
        self.send(Op::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn rename(
        &self,
        from: &str,
        expected: Revision,
        to: &str,
        value: Vec<u8>,
    ) -> Result<Revision> {
        self.send(Op::Rename {
            from: from.to_string(),
            expected,
            to: to.to_string(),
            value,
        })
        .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        watch::start(
            self.db.clone(),
            self.shared.clone(),
            prefix.to_string(),
            from,
        )
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_millis(100) {
            return Err(StoreError::Invalid(
                "lease TTL must be at least 100ms".into(),
            ));
        }
        self.send(Op::GrantLease { ttl }).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.send(Op::KeepAlive { lease }).await.map(|_| ())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.send(Op::RevokeLease { lease }).await.map(|_| ())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.send(Op::Compact { revision }).await.map(|_| ())
    }

    async fn revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}
