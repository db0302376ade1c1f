//! The redb database, shared so that its file can still be compacted.
//!
//! redb reuses the pages that deleted history frees, so the file stops growing once
//! history is compacted, but it gives space back to the file system only through
//! `Database::compact`, which needs the database to itself. Readers and the writer
//! begin their transactions under a shared lock (a redb transaction outlives it); the
//! writer takes the lock alone, between two commits, to compact the file.

use std::sync::RwLock;

use redb::{ReadTransaction, ReadableDatabase, WriteTransaction};

use super::backend_err;
use crate::StoreError;

/// Compact the file only when at least this much of it is free...
const MIN_FREE_BYTES: u64 = 16 << 20;
/// ...and free pages are at least half of it.
const MIN_FREE_SHARE: f64 = 0.5;

pub(crate) struct Db(RwLock<redb::Database>);

fn poisoned() -> StoreError {
    StoreError::Backend("embedded store lock poisoned by a panic".into())
}

impl Db {
    pub(crate) fn new(db: redb::Database) -> Self {
        Db(RwLock::new(db))
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        let db = self.0.read().map_err(|_| poisoned())?;
        db.begin_read().map_err(backend_err)
    }

    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let db = self.0.read().map_err(|_| poisoned())?;
        db.begin_write().map_err(backend_err)
    }

    /// Gives the file's free pages back when they are most of it (`file_len` bytes
    /// now). Readers wait meanwhile; one still inside a transaction makes this a no-op
    /// until the next try. Only the writer calls it, between commits.
    pub(crate) fn compact_file(&self, file_len: u64) -> Result<bool, StoreError> {
        // Counting the used pages walks every tree: not for a file too small to matter.
        if file_len < MIN_FREE_BYTES {
            return Ok(false);
        }
        let used = {
            let txn = self.begin_write()?;
            let stats = txn.stats().map_err(backend_err)?;
            txn.abort().map_err(backend_err)?;
            stats.allocated_pages() * stats.page_size() as u64
        };
        let free = file_len.saturating_sub(used);
        if free < MIN_FREE_BYTES || (free as f64) < file_len as f64 * MIN_FREE_SHARE {
            return Ok(false);
        }
        let mut db = self.0.write().map_err(|_| poisoned())?;
        match db.compact() {
            Ok(done) => Ok(done),
            Err(redb::CompactionError::TransactionInProgress) => Ok(false),
            Err(e) => Err(StoreError::Backend(e.to_string())),
        }
    }
}
