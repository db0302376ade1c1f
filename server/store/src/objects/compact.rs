//! History compaction, as the Kubernetes API server compacts etcd: every `retention`,
//! forget the history before the revision the store was at one tick ago. A watch can
//! always resume from a revision it saw within `retention`; one from before gets
//! `Compacted` and lists again. The embedded store then also gives the file's free
//! pages back when they are most of it.
//!
//! The tick's revision and time are kept in the store (`/shoal/compaction`), like
//! Kubernetes' `compact_rev_key`: a server restarted (or a leader replaced) more often
//! than `retention` still compacts, because the next compactor carries on from the
//! mark rather than starting over.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::keys::ROOT;
use super::ObjectStore;
use crate::{Revision, StoreError};

fn mark_key() -> String {
    format!("{ROOT}compaction")
}

/// The revision the store was at when the last tick ran, and when that was.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    revision: Revision,
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ObjectStore {
    /// Compacts history older than `retention` until `stop` completes. Run by the
    /// leader only (one compactor for the cluster is enough; two would only compact to
    /// older revisions, which is a no-op).
    pub async fn compact_history(&self, retention: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let wait = match self.compaction_tick(retention).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot compact history");
                    retention
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One tick: compacts to the stored mark once it is `retention` old and marks the
    /// revision now. Says how long until the next tick is due.
    async fn compaction_tick(&self, retention: Duration) -> Result<Duration, StoreError> {
        let key = mark_key();
        let stored = self.store.get(&key).await?;
        let mark = stored
            .as_ref()
            .and_then(|kv| serde_json::from_slice::<Mark>(&kv.value).ok());
        let now = now_ms();
        let retention_ms = retention.as_millis() as u64;
        if let Some(mark) = mark {
            let age = now.saturating_sub(mark.at_ms);
            if age < retention_ms {
                return Ok(Duration::from_millis(retention_ms - age));
            }
            if mark.revision > 0 {
                // Both stores take a revision already compacted as done.
                self.store.compact(mark.revision).await?;
                tracing::info!(revision = mark.revision, "history compacted");
            }
        }
        let next = Mark {
            revision: self.store.revision().await?,
            at_ms: now,
        };
        let value = serde_json::to_vec(&next).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let written = match &stored {
            Some(kv) => self.store.update(&key, value, kv.mod_revision, None).await,
            None => self.store.create(&key, value, None).await,
        };
        match written {
            // Another compactor marked first: its mark stands.
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => {
                Ok(retention)
            }
            Err(e) => Err(e),
        }
    }
}
