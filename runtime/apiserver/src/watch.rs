//! Watch over gRPC: optional initial list, a SYNCED marker, then changes. Objects that
//! stop matching the label selector are sent as DELETED, as Kubernetes does.

use std::collections::HashSet;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use shoal_store::objects::ChangeType;
use shoal_store::ObjectStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::pb;
use crate::service::{involves, kind_of, selector_of, status_of, to_json};

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

pub async fn watch_stream(
    objects: ObjectStore,
    req: pb::WatchRequest,
) -> Result<ResponseStream, Status> {
    let kind = kind_of(&req.kind)?;
    let selector = selector_of(&req.label_selector)?;
    let wanted = move |o: &shoal_api::DynamicObject| {
        (req.name.is_empty() || o.metadata.name == req.name)
            && selector.matches(&o.metadata.labels)
            && involves(o, &req.involved_object)
    };
    let mut visible = HashSet::new();
    let mut initial = Vec::new();
    // A resumed watch does not know what the client saw; it passes changes through.
    let resumed = req.resource_version > 0;
    let from = if resumed {
        req.resource_version + 1
    } else {
        let (items, revision) = objects.list(kind).await.map_err(status_of)?;
        for o in items.iter().filter(|o| wanted(o)) {
            visible.insert(o.metadata.name.clone());
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
        revision + 1
    };
    let mut changes = objects.watch(kind, from).await.map_err(status_of)?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for msg in initial {
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        while let Some(item) = changes.next().await {
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => {
                    let _ = tx.send(Err(status_of(e))).await;
                    return;
                }
            };
            let name = ev.object.metadata.name.clone();
            let matches = wanted(&ev.object);
            let kind = match (ev.change, matches, visible.contains(&name) || resumed) {
                (ChangeType::Deleted, _, true) => {
                    visible.remove(&name);
                    "DELETED"
                }
                (ChangeType::Deleted, _, false) => continue,
                (ChangeType::Added, true, true) => "ADDED",
                (_, true, true) => "MODIFIED",
                (_, true, false) => {
                    visible.insert(name);
                    "ADDED"
                }
                (_, false, true) => {
                    visible.remove(&name);
                    "DELETED"
                }
                (_, false, false) => continue,
            };
            let json = match to_json(&ev.object) {
                Ok(j) => j,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let msg = pb::WatchResponse {
                r#type: kind.into(),
                json,
                revision: ev.revision,
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
