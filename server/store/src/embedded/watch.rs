//! Watches on the embedded store: history from the log, then live events.
//!
//! The watcher subscribes to live events *before* reading history, and skips live
//! events it already read from the log, so nothing falls in the gap. A watcher that
//! falls too far behind the live channel goes back to the log instead of losing events.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::db::Db;
use super::records::decode_event;
use super::{backend_err, Shared, LOG, META};
use crate::{Result, Revision, StoreError, WatchEvent, WatchStream};

const LOG_PAGE: usize = 1024;

pub fn start(
    db: Arc<Db>,
    shared: Arc<Shared>,
    prefix: String,
    from: Revision,
) -> Result<WatchStream> {
    let mut live = shared.events.subscribe();
    let compacted = shared.compacted.load(Ordering::SeqCst);
    let start = if from <= 0 {
        shared.revision.load(Ordering::SeqCst) + 1
    } else {
        from
    };
    if start < compacted {
        return Err(StoreError::Compacted {
            compact_revision: compacted,
        });
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut next = start;
        if catch_up(&db, &prefix, &mut next, &tx).await.is_err() {
            return;
        }
        loop {
            match live.recv().await {
                Ok(ev) => {
                    if ev.revision() < next {
                        continue;
                    }
                    next = ev.revision() + 1;
                    if ev.kv.key.starts_with(&prefix) && tx.send(Ok((*ev).clone())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if catch_up(&db, &prefix, &mut next, &tx).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Sends every logged event from `next` on; `Err` means stop (receiver gone or error sent).
async fn catch_up(
    db: &Db,
    prefix: &str,
    next: &mut Revision,
    tx: &mpsc::Sender<Result<WatchEvent>>,
) -> std::result::Result<(), ()> {
    loop {
        let page = match read_page(db, *next) {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return Err(());
            }
        };
        let full = page.len() == LOG_PAGE;
        for ev in page {
            *next = ev.revision() + 1;
            if ev.kv.key.starts_with(prefix) && tx.send(Ok(ev)).await.is_err() {
                return Err(());
            }
        }
        if !full {
            return Ok(());
        }
    }
}

fn read_page(db: &Db, from: Revision) -> Result<Vec<WatchEvent>> {
    let txn = db.begin_read()?;
    let compacted = txn
        .open_table(META)
        .map_err(backend_err)?
        .get("compacted")
        .map_err(backend_err)?
        .map(|v| v.value())
        .unwrap_or(0);
    if from < compacted {
        return Err(StoreError::Compacted {
            compact_revision: compacted,
        });
    }
    let log = txn.open_table(LOG).map_err(backend_err)?;
    let mut out = Vec::new();
    for entry in log.range(from..).map_err(backend_err)?.take(LOG_PAGE) {
        let (_, v) = entry.map_err(backend_err)?;
        out.push(decode_event(v.value())?);
    }
    Ok(out)
}
