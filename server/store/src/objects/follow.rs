//! The one loop that follows a part of the store: list, watch from the list's revision,
//! relist when the history is compacted or the watch breaks, with one back-off. The
//! controllers' caches, the dispatcher, the API server's watch cache and the node
//! controller's heartbeat set are all [`Follower`]s of it.

use futures::StreamExt;

use super::keys::name_in;
use super::retry::follow_backoff;
use super::{ObjectError, Result};
use crate::{EventType, KeyValue, Revision, Store, StoreError};

/// One stored object as a follower sees it, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    pub name: String,
    pub revision: Revision,
    pub value: T,
}

/// What a follower is told, in store order. Its methods run on the following task and
/// must not block.
pub trait Follower<T>: Send {
    /// Everything there is at `revision`, at the start and after every relist: the
    /// follower replaces what it held (what it held and `items` lacks is gone).
    fn listed(&mut self, items: Vec<Item<T>>, revision: Revision);
    /// Created or changed.
    fn applied(&mut self, item: Item<T>);
    /// Deleted at `revision`.
    fn deleted(&mut self, name: &str, revision: Revision);
    /// The watch broke; a relist follows (at once after a compaction, after the
    /// back-off otherwise).
    fn interrupted(&mut self, _error: &ObjectError) {}
}

/// Follows `prefix` for as long as the future is polled (drop it to stop). Values that
/// `decode` refuses are logged and skipped.
pub(crate) async fn follow<T: Send>(
    store: &dyn Store,
    prefix: &str,
    decode: impl Fn(&KeyValue) -> Result<T> + Send + Sync,
    follower: &mut impl Follower<T>,
) {
    let mut failures = 0u32;
    loop {
        let mut listed = false;
        let error = follow_once(store, prefix, &decode, follower, &mut listed).await;
        if listed {
            failures = 0;
        }
        follower.interrupted(&error);
        if let ObjectError::Store(StoreError::Compacted { .. }) = error {
            tracing::info!(prefix, "watch history compacted; relisting");
            continue;
        }
        failures += 1;
        let delay = follow_backoff(failures);
        tracing::warn!(prefix, %error, ?delay, "watch failed; relisting");
        tokio::time::sleep(delay).await;
    }
}

/// One list and the watch after it, until it fails.
async fn follow_once<T>(
    store: &dyn Store,
    prefix: &str,
    decode: &(impl Fn(&KeyValue) -> Result<T> + Send + Sync),
    follower: &mut impl Follower<T>,
    listed: &mut bool,
) -> ObjectError {
    let list = match store.list(prefix).await {
        Ok(list) => list,
        Err(e) => return e.into(),
    };
    // The watch is open before the follower hears of the list, so a follower that
    // reports itself ready on `listed` is following by then.
    let mut changes = match store.watch_without_prev(prefix, list.revision + 1).await {
        Ok(changes) => changes,
        Err(e) => return e.into(),
    };
    let items = list
        .items
        .iter()
        .filter_map(|kv| readable(prefix, kv, decode))
        .collect();
    follower.listed(items, list.revision);
    *listed = true;
    while let Some(event) = changes.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => return e.into(),
        };
        match event.event_type {
            EventType::Put => {
                if let Some(item) = readable(prefix, &event.kv, decode) {
                    follower.applied(item);
                }
            }
            EventType::Delete => {
                follower.deleted(name_in(&event.kv.key, prefix), event.revision());
            }
        }
    }
    StoreError::Unavailable("the store's watch ended".into()).into()
}

fn readable<T>(
    prefix: &str,
    kv: &KeyValue,
    decode: &impl Fn(&KeyValue) -> Result<T>,
) -> Option<Item<T>> {
    match decode(kv) {
        Ok(value) => Some(Item {
            name: name_in(&kv.key, prefix).to_string(),
            revision: kv.mod_revision,
            value,
        }),
        Err(error) => {
            tracing::warn!(key = kv.key, %error, "skipping unreadable object");
            None
        }
    }
}
