//! Watch over gRPC: optional initial list, a SYNCED marker, then changes. Objects that
//! stop matching the label selector are sent as DELETED, as Kubernetes does.
//!
//! Changes come from the watch cache (`watch_cache.rs`); a watch that falls behind it,
//! or resumes from before it, reads the store's history directly from where it is.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use shoal_api::DynamicObject;
use shoal_store::objects::{ChangeType, ObjectStore};
use shoal_store::Revision;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::pb;
use crate::service::{involves, kind_of, selector_of, status_of, to_json};
use crate::watch_cache::{CachedChange, Subscription, WatchCache};

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

type Tx = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// Where a client's stream is: changes at revisions before `revision` have all been
/// handled, and those at `revision` too when `whole`, else the ones named. One store
/// transaction writes many objects at one revision, so a revision alone cannot say
/// where a stream that breaks off mid-transaction resumes.
struct Progress {
    revision: Revision,
    whole: bool,
    names: HashSet<String>,
}

impl Progress {
    /// Everything up to and including `revision` (a list's, or a resume's).
    fn after(revision: Revision) -> Self {
        Progress {
            revision,
            whole: true,
            names: HashSet::new(),
        }
    }

    /// True the first time a change is offered; false for one already handled.
    fn advance(&mut self, revision: Revision, name: &str) -> bool {
        if revision < self.revision || (revision == self.revision && self.whole) {
            return false;
        }
        if revision > self.revision {
            self.revision = revision;
            self.whole = false;
            self.names.clear();
        }
        self.names.insert(name.to_string())
    }

    /// The revision a store watch resumes from without missing anything.
    fn resume_from(&self) -> Revision {
        if self.whole {
            self.revision + 1
        } else {
            self.revision
        }
    }
}

/// What one client sees: the objects it asked for, and which of them it has been sent.
struct View {
    wanted: Box<dyn Fn(&DynamicObject) -> bool + Send>,
    visible: HashSet<String>,
    /// A resumed watch does not know what the client saw; it passes changes through.
    resumed: bool,
}

impl View {
    /// The event type to send for a change, or None when the client does not see it.
    fn classify(&mut self, change: ChangeType, object: &DynamicObject) -> Option<&'static str> {
        let name = &object.metadata.name;
        let seen = self.resumed || self.visible.contains(name);
        Some(match (change, (self.wanted)(object), seen) {
            (ChangeType::Deleted, _, true) => {
                self.visible.remove(name);
                "DELETED"
            }
            (ChangeType::Deleted, _, false) => return None,
            (ChangeType::Added, true, true) => "ADDED",
            (_, true, true) => "MODIFIED",
            (_, true, false) => {
                self.visible.insert(name.clone());
                "ADDED"
            }
            (_, false, true) => {
                self.visible.remove(name);
                "DELETED"
            }
            (_, false, false) => return None,
        })
    }
}

pub async fn watch_stream(
    cache: &WatchCache,
    objects: ObjectStore,
    req: pb::WatchRequest,
) -> Result<ResponseStream, Status> {
    let kind = kind_of(&req.kind)?;
    let selector = selector_of(&req.label_selector)?;
    let resumed = req.resource_version > 0;
    let mut view = View {
        wanted: Box::new(move |o: &DynamicObject| {
            (req.name.is_empty() || o.metadata.name == req.name)
                && selector.matches(&o.metadata.labels)
                && involves(o, &req.involved_object)
        }),
        visible: HashSet::new(),
        resumed,
    };
    // Subscribe before listing: the list is then at or after the subscription, so every
    // change after the list arrives through it.
    let mut subscription = cache.subscribe(kind).await;
    let mut initial = Vec::new();
    let from = if resumed {
        req.resource_version
    } else {
        let (items, revision) = objects.list(kind).await.map_err(status_of)?;
        for o in items.iter().filter(|o| (view.wanted)(o)) {
            view.visible.insert(o.metadata.name.clone());
            if req.send_initial {
                initial.push(pb::WatchResponse {
                    r#type: "ADDED".into(),
                    json: to_json(o)?,
                    revision,
                });
            }
        }
        initial.push(pb::WatchResponse {
            r#type: "SYNCED".into(),
            json: String::new(),
            revision,
        });
        revision
    };
    // A resume from before the subscription would miss what the cache already sent.
    if subscription.as_ref().is_some_and(|s| s.revision > from) {
        subscription = None;
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for msg in initial {
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        let mut progress = Progress::after(from);
        if let Some(s) = subscription {
            match from_cache(s, &mut view, &mut progress, &tx).await {
                Ok(()) => return,
                Err(behind) => tracing::info!(
                    %behind,
                    revision = progress.revision,
                    "a watch fell behind the watch cache; serving it from the store"
                ),
            }
        }
        from_store(&objects, kind, &mut view, &mut progress, &tx).await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Forwards the cache's changes after `progress`; Ok when the client went away, Err
/// when the cache can no longer serve this client (it fell behind, or it restarted).
async fn from_cache(
    mut s: Subscription,
    view: &mut View,
    progress: &mut Progress,
    tx: &Tx,
) -> Result<(), broadcast::error::RecvError> {
    loop {
        let change: Arc<CachedChange> = s.changes.recv().await?;
        if !progress.advance(change.revision, &change.object.metadata.name) {
            continue;
        }
        let Some(kind) = view.classify(change.change, &change.object) else {
            continue;
        };
        let msg = change
            .json()
            .map(|json| pb::WatchResponse {
                r#type: kind.into(),
                json: json.to_string(),
                revision: change.revision,
            })
            .map_err(Status::internal);
        let failed = msg.is_err();
        if tx.send(msg).await.is_err() || failed {
            return Ok(());
        }
    }
}

async fn from_store(
    objects: &ObjectStore,
    kind: &'static shoal_api::KindDesc,
    view: &mut View,
    progress: &mut Progress,
    tx: &Tx,
) {
    let mut changes = match objects.watch(kind, progress.resume_from()).await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(status_of(e))).await;
            return;
        }
    };
    while let Some(item) = changes.next().await {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                let _ = tx.send(Err(status_of(e))).await;
                return;
            }
        };
        if !progress.advance(ev.revision, &ev.object.metadata.name) {
            continue;
        }
        let Some(kind) = view.classify(ev.change, &ev.object) else {
            continue;
        };
        let msg = to_json(&ev.object).map(|json| pb::WatchResponse {
            r#type: kind.into(),
            json,
            revision: ev.revision,
        });
        let failed = msg.is_err();
        if tx.send(msg).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn progress_resumes_mid_transaction_without_loss_or_repeats() {
        let mut p = Progress::after(10);
        assert!(!p.advance(10, "listed"), "the list had revision 10");
        assert!(p.advance(11, "a"));
        assert!(p.advance(11, "b"), "one transaction, many objects");
        assert_eq!(p.resume_from(), 11, "11 may have more");
        assert!(!p.advance(11, "a"), "replayed from the store: already sent");
        assert!(p.advance(11, "c"));
        assert!(p.advance(12, "a"));
        assert!(!p.advance(11, "d"), "history never goes back");
        assert_eq!(Progress::after(7).resume_from(), 8);
    }
}
