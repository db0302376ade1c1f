//! The watch cache: one store watch per kind, shared by every client watch of that kind
//! (`get -w`, `events -w`, `rollout status`, benchmarks), as Kubernetes' apiserver
//! serves watches from its cacher. Without it each client watch is one more etcd
//! watcher, and etcd reads the previous value of every event for each of them.
//!
//! A kind's cache starts with the first watch of that kind and then lives as long as the
//! server: it lists, watches from the list's revision without previous values, keeps the
//! current objects (a deletion needs the last value, for selectors and for the client)
//! and broadcasts each change once decoded. A subscriber that falls behind the broadcast
//! buffer, or whose cache restarts, carries on from the store directly (see `watch.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use shoal_api::{DynamicObject, KindDesc};
use shoal_store::objects::{ChangeType, Follower, Item, ObjectError};
use shoal_store::{ObjectStore, Revision};
use tokio::sync::{broadcast, watch};

/// How long a watch waits for a starting cache before using the store directly.
const READY_WAIT: Duration = Duration::from_secs(5);

/// One change, decoded once for every subscriber; the JSON is made at most once too.
pub struct CachedChange {
    pub change: ChangeType,
    pub object: Arc<DynamicObject>,
    pub revision: Revision,
    json: OnceLock<Result<String, String>>,
}

impl CachedChange {
    pub fn json(&self) -> Result<&str, String> {
        self.json
            .get_or_init(|| serde_json::to_string(&*self.object).map_err(|e| e.to_string()))
            .as_deref()
            .map_err(Clone::clone)
    }
}

/// A subscription: every change after `revision`, in order.
pub struct Subscription {
    pub changes: broadcast::Receiver<Arc<CachedChange>>,
    pub revision: Revision,
}

#[derive(Clone)]
pub struct WatchCache {
    objects: ObjectStore,
    /// Changes a subscriber may be behind before it moves to a store watch of its own.
    /// Each slot holds an object alive, so this bounds the memory too.
    buffer: usize,
    kinds: Arc<Mutex<HashMap<&'static str, Arc<KindCache>>>>,
}

struct KindCache {
    state: RwLock<State>,
    /// True while the cache is listed and its store watch is running.
    ready: watch::Sender<bool>,
    buffer: usize,
}

struct State {
    objects: HashMap<String, Arc<DynamicObject>>,
    revision: Revision,
    changes: broadcast::Sender<Arc<CachedChange>>,
}

impl WatchCache {
    pub fn new(objects: ObjectStore, buffer: usize) -> Self {
        WatchCache {
            objects,
            buffer: buffer.max(1),
            kinds: Arc::default(),
        }
    }

    /// Subscribes to `kind`'s changes, starting its cache on first use; None when the
    /// cache is not ready in time (the caller watches the store directly).
    pub async fn subscribe(&self, kind: &'static KindDesc) -> Option<Subscription> {
        let cache = self.cache_of(kind);
        let mut ready = cache.ready.subscribe();
        let waited = tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r)).await;
        if !matches!(waited, Ok(Ok(_))) {
            return None;
        }
        let state = cache.state.read().unwrap_or_else(|p| p.into_inner());
        Some(Subscription {
            changes: state.changes.subscribe(),
            revision: state.revision,
        })
    }

    fn cache_of(&self, kind: &'static KindDesc) -> Arc<KindCache> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        kinds
            .entry(kind.kind)
            .or_insert_with(|| {
                let cache = Arc::new(KindCache {
                    state: RwLock::new(State {
                        objects: HashMap::new(),
                        revision: 0,
                        changes: broadcast::channel(self.buffer).0,
                    }),
                    ready: watch::channel(false).0,
                    buffer: self.buffer,
                });
                tokio::spawn(feed(self.objects.clone(), kind, cache.clone()));
                cache
            })
            .clone()
    }
}

/// Keeps one kind's cache equal to the store, forever; after a failure it closes the
/// broadcast (subscribers carry on from the store) and the store's follow loop lists
/// again.
async fn feed(objects: ObjectStore, kind: &'static KindDesc, cache: Arc<KindCache>) {
    objects.follow_objects(kind, &mut Feeding(cache)).await
}

struct Feeding(Arc<KindCache>);

impl Feeding {
    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.0.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn broadcast(&self, state: &mut State, change: ChangeType, object: Arc<DynamicObject>) {
        // No subscribers is not an error: the cache stays warm for the next watch.
        let _ = state.changes.send(Arc::new(CachedChange {
            change,
            object,
            revision: state.revision,
            json: OnceLock::new(),
        }));
    }
}

impl Follower<DynamicObject> for Feeding {
    fn listed(&mut self, items: Vec<Item<DynamicObject>>, revision: Revision) {
        {
            let mut state = self.state();
            state.objects = items
                .into_iter()
                .map(|item| (item.name, Arc::new(item.value)))
                .collect();
            state.revision = revision;
        }
        self.0.ready.send_replace(true);
        tracing::debug!(revision, "watch cache ready");
    }

    fn applied(&mut self, item: Item<DynamicObject>) {
        let mut state = self.state();
        let object = Arc::new(item.value);
        let change = match state.objects.insert(item.name, object.clone()) {
            Some(_) => ChangeType::Modified,
            None => ChangeType::Added,
        };
        state.revision = item.revision;
        self.broadcast(&mut state, change, object);
    }

    fn deleted(&mut self, name: &str, revision: Revision) {
        let mut state = self.state();
        state.revision = revision;
        let Some(last) = state.objects.remove(name) else {
            return;
        };
        let mut gone = (*last).clone();
        gone.metadata.resource_version = Some(revision.to_string());
        self.broadcast(&mut state, ChangeType::Deleted, Arc::new(gone));
    }

    fn interrupted(&mut self, error: &ObjectError) {
        tracing::warn!(%error, "watch cache restarting");
        self.0.ready.send_replace(false);
        let buffer = self.0.buffer;
        self.state().changes = broadcast::channel(buffer).0;
    }
}
