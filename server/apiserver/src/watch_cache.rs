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

use futures::StreamExt;
use shoal_api::{DynamicObject, KindDesc};
use shoal_store::objects::{ChangeType, TypedChange};
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
/// broadcast (subscribers carry on from the store) and lists again.
async fn feed(objects: ObjectStore, kind: &'static KindDesc, cache: Arc<KindCache>) {
    loop {
        if let Err(e) = follow(&objects, kind, &cache).await {
            tracing::warn!(kind = kind.kind, error = %e, "watch cache restarting");
        }
        cache.ready.send_replace(false);
        {
            let mut state = cache.state.write().unwrap_or_else(|p| p.into_inner());
            state.changes = broadcast::channel(cache.buffer).0;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow(
    objects: &ObjectStore,
    kind: &'static KindDesc,
    cache: &KindCache,
) -> Result<(), shoal_store::objects::ObjectError> {
    let (items, revision) = objects.list(kind).await?;
    let mut stream = objects.watch_objects(kind, revision + 1).await?;
    {
        let mut state = cache.state.write().unwrap_or_else(|p| p.into_inner());
        state.objects = items
            .into_iter()
            .map(|o| (o.metadata.name.clone(), Arc::new(o)))
            .collect();
        state.revision = revision;
    }
    cache.ready.send_replace(true);
    tracing::debug!(kind = kind.kind, revision, "watch cache ready");
    while let Some(change) = stream.next().await {
        let mut state = cache.state.write().unwrap_or_else(|p| p.into_inner());
        let (change, object, revision) = match change? {
            TypedChange::Applied(o, revision) => {
                let o = Arc::new(o);
                let name = o.metadata.name.clone();
                let change = match state.objects.insert(name, o.clone()) {
                    Some(_) => ChangeType::Modified,
                    None => ChangeType::Added,
                };
                (change, o, revision)
            }
            TypedChange::Deleted(name, revision) => {
                let Some(last) = state.objects.remove(&name) else {
                    state.revision = revision;
                    continue;
                };
                let mut gone = (*last).clone();
                gone.metadata.resource_version = Some(revision.to_string());
                (ChangeType::Deleted, Arc::new(gone), revision)
            }
        };
        state.revision = revision;
        // No subscribers is not an error: the cache stays warm for the next watch.
        let _ = state.changes.send(Arc::new(CachedChange {
            change,
            object,
            revision,
            json: OnceLock::new(),
        }));
    }
    Err(shoal_store::objects::ObjectError::Store(
        shoal_store::StoreError::Unavailable("the store's watch ended".into()),
    ))
}
