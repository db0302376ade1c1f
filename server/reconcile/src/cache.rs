//! A watch-backed cache of one kind (client-go's reflector + store), shared by every
//! controller that reads that kind.

use shoal_api::Resource;
use shoal_store::objects::{Follower, Item};
use shoal_store::{ObjectStore, Revision};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What happened to one cached object.
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

type Listener<K> = Arc<dyn Fn(&Change<K>) + Send + Sync>;
type Map<K> = Arc<RwLock<HashMap<String, Arc<K>>>>;

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// A read-only view of a cache, cheap to clone.
pub struct Reader<K> {
    map: Map<K>,
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
        read(&self.map).get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        read(&self.map).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        read(&self.map).len()
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

/// A handle on one kind's cache; clones share it. Listeners may subscribe at any time
/// and are first told about everything already cached.
pub struct Reflector<K> {
    objects: ObjectStore,
    map: Map<K>,
    listeners: Arc<RwLock<Vec<Listener<K>>>>,
    ready_tx: Arc<watch::Sender<bool>>,
    ready_rx: watch::Receiver<bool>,
}

impl<K> Clone for Reflector<K> {
    fn clone(&self) -> Self {
        Reflector {
            objects: self.objects.clone(),
            map: self.map.clone(),
            listeners: self.listeners.clone(),
            ready_tx: self.ready_tx.clone(),
            ready_rx: self.ready_rx.clone(),
        }
    }
}

impl<K: Resource> Reflector<K> {
    pub fn new(objects: ObjectStore) -> Self {
        let (ready_tx, ready_rx) = watch::channel(false);
        Reflector {
            objects,
            map: Default::default(),
            listeners: Default::default(),
            ready_tx: Arc::new(ready_tx),
            ready_rx,
        }
    }

    pub fn reader(&self) -> Reader<K> {
        Reader {
            map: self.map.clone(),
            ready: self.ready_rx.clone(),
        }
    }

    /// Calls `f` for every change from now on, including the ones a relist discovers,
    /// after calling it once for each object already cached.
    pub fn on_change(&self, f: impl Fn(&Change<K>) + Send + Sync + 'static) {
        let f: Listener<K> = Arc::new(f);
        // Registered before the snapshot is taken, so nothing falls in between (a
        // change may be seen twice, which level-triggered listeners don't mind).
        write(&self.listeners).push(f.clone());
        let cached: Vec<Arc<K>> = read(&self.map).values().cloned().collect();
        for k in cached {
            f(&Change::Applied(k));
        }
    }

    fn emit(&self, change: Change<K>) {
        let listeners = read(&self.listeners).clone();
        for l in &listeners {
            l(&change);
        }
    }

    /// Lists, then follows the watch; relists when history is compacted or the watch
    /// fails (the store's one follow loop). Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let objects = self.objects.clone();
        tokio::select! {
            _ = objects.follow::<K>(&mut self) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

impl<K: Resource> Follower<K> for Reflector<K> {
    fn listed(&mut self, items: Vec<Item<K>>, _revision: Revision) {
        let fresh: HashMap<String, Arc<K>> = items
            .into_iter()
            .map(|item| (item.name, Arc::new(item.value)))
            .collect();
        let gone: Vec<Arc<K>> = {
            let mut map = write(&self.map);
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
    }

    fn applied(&mut self, item: Item<K>) {
        let k = Arc::new(item.value);
        write(&self.map).insert(item.name, k.clone());
        self.emit(Change::Applied(k));
    }

    fn deleted(&mut self, name: &str, _revision: Revision) {
        let old = write(&self.map).remove(name);
        if let Some(old) = old {
            self.emit(Change::Deleted(old));
        }
    }
}
