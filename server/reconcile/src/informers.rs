//! One cache per kind for all the controllers of a process (client-go's shared
//! informer factory): each kind is listed and watched once, and each event decoded
//! once, however many controllers read it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shoal_api::Resource;
use shoal_store::ObjectStore;
use tokio_util::sync::CancellationToken;

use crate::cache::Reflector;

/// Cheap to clone; every clone hands out the same caches.
#[derive(Clone)]
pub struct Informers {
    objects: ObjectStore,
    shutdown: CancellationToken,
    running: Arc<Mutex<HashMap<&'static str, Box<dyn Any + Send + Sync>>>>,
}

impl Informers {
    /// Caches started from here follow the store until `shutdown`.
    pub fn new(objects: ObjectStore, shutdown: CancellationToken) -> Self {
        Informers {
            objects,
            shutdown,
            running: Arc::default(),
        }
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// The cache of `K`, started on first use (a tokio runtime must be running).
    pub fn get<K: Resource>(&self) -> Reflector<K> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running
            .get(K::KIND)
            .and_then(|r| r.downcast_ref::<Reflector<K>>())
        {
            return r.clone();
        }
        let reflector = Reflector::<K>::new(self.objects.clone());
        tokio::spawn(reflector.clone().run(self.shutdown.clone()));
        running.insert(K::KIND, Box::new(reflector.clone()));
        reflector
    }
}
