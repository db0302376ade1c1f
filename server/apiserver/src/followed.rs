//! A table the API server keeps from stored objects for the agents' streams (peers,
//! log pipelines): followers fill one map of it per kind, by object name, and each
//! subscriber gets its view of the table at once and again whenever the view
//! changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_store::objects::{Follower, Item};
use shoal_store::{ObjectStore, Revision};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub(crate) struct Followed<T> {
    table: Mutex<T>,
    /// Moves on every change; subscribers recompute their view on it.
    generation: watch::Sender<u64>,
    /// Kinds followed that have not been listed yet.
    unlisted: AtomicUsize,
}

impl<T: Default + Send + 'static> Followed<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Followed {
            table: Mutex::new(T::default()),
            generation: watch::channel(0).0,
            unlisted: AtomicUsize::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.lock());
        self.generation.send_modify(|g| *g += 1);
    }

    /// Whether every kind followed has been listed once.
    pub(crate) fn all_listed(&self) -> bool {
        self.unlisted.load(Ordering::SeqCst) == 0
    }

    /// Follows kind `R` into one map of the table, by object name: what `decode`
    /// makes of each (an object it refuses is absent), until `shutdown`.
    pub(crate) fn follow<R: shoal_api::Resource, V: Send + 'static>(
        self: &Arc<Self>,
        objects: ObjectStore,
        decode: fn(&[u8]) -> Option<V>,
        map: fn(&mut T) -> &mut HashMap<String, V>,
        shutdown: CancellationToken,
    ) {
        self.unlisted.fetch_add(1, Ordering::SeqCst);
        let mut follower = ByName {
            table: self.clone(),
            map,
            listed: false,
        };
        tokio::spawn(async move {
            let kind = shoal_api::kind_of::<R>();
            tokio::select! {
                _ = objects.follow_stored(kind, decode, &mut follower) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// What `view` makes of the table now and whenever it changes, sent only when it
    /// differs from the last one sent (None: nothing to send yet), until the
    /// receiver goes.
    pub(crate) fn subscribe<V: PartialEq + Clone + Send + 'static>(
        self: &Arc<Self>,
        view: impl Fn(&Self) -> Option<V> + Send + 'static,
    ) -> mpsc::Receiver<Result<V, tonic::Status>> {
        let (tx, rx) = mpsc::channel(1);
        let mut changed = self.generation.subscribe();
        let table = self.clone();
        tokio::spawn(async move {
            let mut last: Option<V> = None;
            loop {
                changed.mark_unchanged();
                if let Some(v) = view(&table).filter(|v| last.as_ref() != Some(v)) {
                    if tx.send(Ok(v.clone())).await.is_err() {
                        return;
                    }
                    last = Some(v);
                }
                tokio::select! {
                    c = changed.changed() => if c.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }
}

/// Follows one kind into one map of the table.
struct ByName<T, V> {
    table: Arc<Followed<T>>,
    map: fn(&mut T) -> &mut HashMap<String, V>,
    listed: bool,
}

impl<T: Default + Send + 'static, V: Send> Follower<Option<V>> for ByName<T, V> {
    fn listed(&mut self, items: Vec<Item<Option<V>>>, _: Revision) {
        let map = self.map;
        self.table.change(|t| {
            *map(t) = items
                .into_iter()
                .filter_map(|i| Some((i.name, i.value?)))
                .collect();
        });
        if !std::mem::replace(&mut self.listed, true) {
            self.table.unlisted.fetch_sub(1, Ordering::SeqCst);
            // Subscribers waiting for every kind look again.
            self.table.generation.send_modify(|g| *g += 1);
        }
    }
    fn applied(&mut self, item: Item<Option<V>>) {
        let map = self.map;
        self.table.change(|t| match item.value {
            Some(v) => {
                map(t).insert(item.name, v);
            }
            None => {
                map(t).remove(&item.name);
            }
        });
    }
    fn deleted(&mut self, name: &str, _: Revision) {
        let map = self.map;
        self.table.change(|t| {
            map(t).remove(name);
        });
    }
}
