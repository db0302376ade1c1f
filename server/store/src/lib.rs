//! The Store: a revisioned, watchable key-value store with etcd's semantics, and the
//! typed object layer that the API server and controllers use on top of it.
//!
//! Two backends implement [`Store`] and pass one conformance suite
//! ([`conformance`]): [`EmbeddedStore`] (redb, in a data directory) and [`EtcdStore`].
//!
//! # Guarantees
//! - Every successful write gets a revision greater than any before it, across restarts.
//! - `create` fails if the key exists; `update` and `delete` with an expected revision
//!   fail with `Conflict` if the key moved on. Nothing is half-written.
//! - A watch from revision `r` delivers every change with revision >= `r` in order, or
//!   fails with `Compacted` when that history is gone; the caller relists.
//! - Keys attached to a lease disappear (with delete events) when the lease expires.

pub mod conformance;
mod embedded;
mod etcd;
pub mod objects;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;
pub use objects::{ObjectStore, ObjectWatchEvent};

pub type Revision = i64;
pub type LeaseId = i64;

/// A key's current value and its revision bookkeeping, as etcd keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub lease: LeaseId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The store revision the list was read at; watch from `revision + 1` to follow it.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change. For a delete, `kv` holds the key and the delete's revision, and `prev`
/// the last value the key had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub event_type: EventType,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    Create {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
        lease: Option<LeaseId>,
    },
    /// Removes `key` if its `mod_revision` is `expected`.
    Delete { key: String, expected: Revision },
}

impl BatchOp {
    pub fn key(&self) -> &str {
        match self {
            BatchOp::Create { key, .. }
            | BatchOp::Update { key, .. }
            | BatchOp::Delete { key, .. } => key,
        }
    }

    /// A transaction names each key at most once: `Invalid` naming the first repeated.
    pub fn check_distinct(ops: &[BatchOp]) -> Result<()> {
        let mut keys = std::collections::HashSet::new();
        match ops.iter().find(|op| !keys.insert(op.key())) {
            Some(twice) => Err(StoreError::Invalid(format!(
                "{} appears twice in one transaction",
                twice.key()
            ))),
            None => Ok(()),
        }
    }

    /// Bytes the op carries: what counts against a transaction's size limit.
    pub fn size(&self) -> usize {
        match self {
            BatchOp::Create { key, value, .. } | BatchOp::Update { key, value, .. } => {
                key.len() + value.len()
            }
            BatchOp::Delete { key, .. } => key.len(),
        }
    }
}

/// The most one [`Store::transact`] may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnLimit {
    pub ops: usize,
    /// Keys and values together; one op alone may exceed it up to the object limit.
    pub bytes: usize,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} not found")]
    NotFound { key: String },
    #[error("{key} was changed concurrently (now at revision {current}, expected {expected})")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    #[error("history before revision {compact_revision} is compacted; list again")]
    Compacted { compact_revision: Revision },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A revisioned key-value store with etcd's semantics. Keys are UTF-8 paths.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// All keys starting with `prefix`, sorted, and the revision they were read at.
    async fn list(&self, prefix: &str) -> Result<ListResult>;
    /// Writes `key` only if it does not exist.
    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision>;
    /// Writes `key` only if its `mod_revision` is `expected`.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Revision>;
    /// Several creates and updates, each with its own outcome, as if issued one by one;
    /// the backend groups them (one etcd transaction when none conflicts).
    async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<Result<Revision>>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(self.apply_op(op).await);
        }
        Ok(out)
    }
    /// One batch operation on its own.
    async fn apply_op(&self, op: BatchOp) -> Result<Revision> {
        match op {
            BatchOp::Create { key, value, lease } => self.create(&key, value, lease).await,
            BatchOp::Update {
                key,
                value,
                expected,
                lease,
            } => self.update(&key, value, expected, lease).await,
            BatchOp::Delete { key, expected } => self.delete(&key, Some(expected)).await,
        }
    }
    /// All of `ops` or none of them, also across a crash: every precondition is checked
    /// before anything is written, and all writes land in one commit (one etcd
    /// transaction), so no reader ever sees some of them without the others. When one
    /// precondition fails, the error is that op's (it names the key) and nothing is
    /// written. At most [`txn_limit`](Self::txn_limit); a key at most once. Gives each
    /// op's revision (etcd: all the same; embedded: one each, in order).
    async fn transact(&self, ops: Vec<BatchOp>) -> Result<Vec<Revision>>;
    /// How much one [`transact`](Self::transact) can hold.
    fn txn_limit(&self) -> TxnLimit;
    /// Deletes `key`, only if its `mod_revision` is `expected` when one is given.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision>;
    /// Moves `from` (only if its `mod_revision` is `expected`) to `to` (only if absent),
    /// stored as `value`: both happen, or neither, also across a crash. `NotFound` names
    /// `from`, `AlreadyExists` names `to`.
    async fn rename(
        &self,
        from: &str,
        expected: Revision,
        to: &str,
        value: Vec<u8>,
    ) -> Result<Revision>;
    /// Changes under `prefix` from revision `from` on (0: from now).
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;
    /// As [`watch`](Self::watch), but events may come without `prev` where that saves
    /// the backend work (etcd reads the previous value of every event for every
    /// watcher that asks): a put is new when `kv.version == 1`, and a delete names
    /// only its key. For caches, which hold the previous values themselves.
    async fn watch_without_prev(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.watch(prefix, from).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// Forgets history before `revision`; watches from earlier get `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// The store's current revision.
    async fn revision(&self) -> Result<Revision>;
    /// A short name for logs and benchmarks: `embedded` or `etcd`.
    fn backend(&self) -> &'static str;
}

/// Opens the store a `--store` flag names: `etcd://h:p[,h:p]`, or the embedded store in
/// `data_dir` when no URL is given.
pub async fn open(
    url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn Store>> {
    match url {
        None => Ok(std::sync::Arc::new(EmbeddedStore::open(data_dir)?)),
        Some(url) => {
            let hosts = url.strip_prefix("etcd://").ok_or_else(|| {
                StoreError::Invalid(format!(
                    "--store {url:?}: expected etcd://host:port[,host:port]"
                ))
            })?;
            let endpoints: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("http://{h}"))
                .collect();
            if endpoints.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "--store {url:?}: no hosts given"
                )));
            }
            Ok(std::sync::Arc::new(EtcdStore::connect(&endpoints).await?))
        }
    }
}
