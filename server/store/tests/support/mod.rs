//! What the object-layer tests share: an embedded store in a temporary directory, an
//! object store on a test etcd, and many writers racing on one object.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use shoal_store::objects::ObjectError;
use shoal_store::{EmbeddedStore, EtcdStore, ObjectStore, Store};

/// An object store on a fresh embedded store (kept while the directory lives).
pub fn objects() -> (tempfile::TempDir, ObjectStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    (dir, ObjectStore::new(store))
}

/// An object store on a test etcd (which must outlive it).
pub async fn etcd_objects(etcd: &shoal_testkit::Etcd) -> ObjectStore {
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()])
            .await
            .expect("connect"),
    );
    ObjectStore::new(store)
}

/// Runs `write(objects, i)` for `i` in `0..n` at once and expects every one to land.
pub async fn all_land<T, Fut>(objects: &ObjectStore, n: usize, write: fn(ObjectStore, usize) -> Fut)
where
    Fut: Future<Output = Result<T, ObjectError>> + Send + 'static,
    T: Send + 'static,
{
    let writers: Vec<_> = (0..n)
        .map(|i| tokio::spawn(write(objects.clone(), i)))
        .collect();
    for w in writers {
        w.await.expect("join").expect("every writer lands");
    }
}
