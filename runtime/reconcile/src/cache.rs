//! A watch-backed cache of one kind (client-go's reflector + store).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use shoal_api::{DynamicObject, KindDesc, Resource};
use shoal_store::objects::{ChangeType, ObjectError};
use shoal_store::{ObjectStore, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What happened to one cached object.
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

type Listener<K> = Arc<dyn Fn(&Change<K>) + Send + Sync>;

/// A read-only view of a cache, cheap to clone.
pub struct Reader<K> {
    map: Arc<RwLock<HashMap<String, Arc<K>>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Reader<K> {
    fn clone(&self) -> Self {
        Reader {
            map: self.map.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Resource> Reader<K> {
    pub fn get(&self, name: &str) -> Option<Arc<K>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first list has been loaded.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        // An error means the reflector is gone; nothing more will arrive either way.
        let _ = ready.wait_for(|r| *r).await;
    }
}

pub struct Reflector<K> {
    objects: ObjectStore,
    kind: &'static KindDesc,
    map: Arc<RwLock<HashMap<String, Arc<K>>>>,
    ready_tx: watch::Sender<bool>,
    ready_rx: watch::Receiver<bool>,
    listeners: Vec<Listener<K>>,
}

impl<K: Resource> Reflector<K> {
    pub fn new(objects: ObjectStore) -> Self {
        let kind = shoal_api::kind_of::<K>();
        let (ready_tx, ready_rx) = watch::channel(false);
        Reflector {
            objects,
            kind,
            map: Default::default(),
            ready_tx,
            ready_rx,
            listeners: Vec::new(),
        }
    }

    pub fn reader(&self) -> Reader<K> {
        Reader {
            map: self.map.clone(),
            ready: self.ready_rx.clone(),
        }
    }

    /// Calls `f` for every change, including the ones a relist discovers.
    pub fn on_change(&mut self, f: impl Fn(&Change<K>) + Send + Sync + 'static) {
        self.listeners.push(Arc::new(f));
    }

    fn emit(&self, change: Change<K>) {
        for l in &self.listeners {
            l(&change);
        }
    }

    fn decode(&self, obj: &DynamicObject) -> Option<Arc<K>> {
        match obj.to_typed::<K>() {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                tracing::warn!(kind = K::KIND, name = %obj.metadata.name, error = %e, "skipping unreadable object");
                None
            }
        }
    }

    /// Lists, then follows the watch; relists when history is compacted or the watch
    /// fails. Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let result = tokio::select! {
                r = self.list_and_watch() => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Err(ObjectError::Store(StoreError::Compacted { .. })) => {
                    tracing::info!(kind = K::KIND, "watch history compacted; relisting");
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    let delay = Duration::from_millis(100 * (1u64 << failures.min(6)));
                    tracing::warn!(kind = K::KIND, error = %e, ?delay, "watch failed; relisting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                Ok(()) => {}
            }
        }
    }

    async fn list_and_watch(&self) -> Result<(), ObjectError> {
        let (items, revision) = self.objects.list(self.kind).await?;
        let mut fresh = HashMap::with_capacity(items.len());
        for obj in &items {
            if let Some(k) = self.decode(obj) {
                fresh.insert(obj.metadata.name.clone(), k);
            }
        }
        let gone: Vec<Arc<K>> = {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            let gone = map
                .iter()
                .filter(|(n, _)| !fresh.contains_key(*n))
                .map(|(_, v)| v.clone())
                .collect();
            *map = fresh.clone();
            gone
        };
        for k in gone {
            self.emit(Change::Deleted(k));
        }
        for k in fresh.into_values() {
            self.emit(Change::Applied(k));
        }
        self.ready_tx.send_replace(true);
        let mut stream = self.objects.watch(self.kind, revision + 1).await?;
        while let Some(item) = stream.next().await {
            let ev = item?;
            let name = ev.object.metadata.name.clone();
            match ev.change {
                ChangeType::Deleted => {
                    let old = self
                        .map
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&name);
                    if let Some(old) = old.or_else(|| self.decode(&ev.object)) {
                        self.emit(Change::Deleted(old));
                    }
                }
                ChangeType::Added | ChangeType::Modified => {
                    if let Some(k) = self.decode(&ev.object) {
                        self.map
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name, k.clone());
                        self.emit(Change::Applied(k));
                    }
                }
            }
        }
        Err(ObjectError::Store(StoreError::Unavailable(
            "watch ended".into(),
        )))
    }
}
