//! History compaction, as the Kubernetes API server compacts etcd: every `retention`,
//! forget the history before the revision the store was at one tick ago. A watch can
//! always resume from a revision it saw within `retention`; one from before gets
//! `Compacted` and lists again. The embedded store then also gives the file's free
//! pages back when they are most of it.

use std::future::Future;
use std::time::Duration;

use super::ObjectStore;
use crate::Revision;

impl ObjectStore {
    /// Compacts history older than `retention` until `stop` completes. Run by the
    /// leader only (one compactor for the cluster is enough; two would only compact to
    /// older revisions, which is a no-op).
    pub async fn compact_history(&self, retention: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut previous: Option<Revision> = None;
        loop {
            match self.store.revision().await {
                Ok(now) => {
                    if let Some(rev) = previous.filter(|&rev| rev > 0) {
                        // Both stores take a revision already compacted as done.
                        match self.store.compact(rev).await {
                            Ok(()) => tracing::info!(revision = rev, "history compacted"),
                            Err(e) => {
                                tracing::warn!(error = %e, revision = rev, "cannot compact history")
                            }
                        }
                    }
                    previous = Some(now);
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the store revision to compact"),
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(retention) => {}
            }
        }
    }
}
