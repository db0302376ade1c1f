//! Both backends against the one conformance suite, with real etcd.

use std::sync::Arc;

use shoal_store::{conformance, EmbeddedStore, EtcdStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    conformance::run_all(store, "/conformance/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let etcd = shoal_testkit::Etcd::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()])
            .await
            .expect("connect"),
    );
    conformance::run_all(store, "/conformance/").await;
}

#[tokio::test]
async fn etcd_unreachable_is_a_clear_error() {
    let port = shoal_testkit::free_port();
    let err = shoal_store::open(
        Some(&format!("etcd://127.0.0.1:{port}")),
        std::path::Path::new("/nonexistent"),
    )
    .await
    .err()
    .expect("must fail");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let err = shoal_store::open(Some("http://x"), std::path::Path::new("/nonexistent"))
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("etcd://"), "{err}");
}
