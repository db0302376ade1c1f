//! `ObjectStore::apply_all`: an apply of several manifests is one transaction. A
//! manifest that cannot land (a stale pinned version) writes nothing of the others;
//! racing writers are planned around; an apply larger than one etcd transaction lands
//! whole, part by part.

mod support;

use serde_json::json;
use shoal_api::{DynamicObject, KindDesc, Network};
use shoal_store::objects::{ApplyOutcome, ObjectError};
use shoal_store::ObjectStore;
use support::{etcd_objects, objects};

fn network() -> &'static KindDesc {
    shoal_api::kind_of::<Network>()
}

fn net(name: &str, subnet: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "shoal.dev/v1", "kind": "Network",
        "metadata": {"name": name},
        "spec": {"subnet": subnet},
    }))
    .expect("object")
}

async fn names(objects: &ObjectStore) -> Vec<String> {
    let (items, _) = objects.list(network()).await.expect("list");
    items.into_iter().map(|o| o.metadata.name).collect()
}

async fn one_stale_manifest_writes_nothing(objects: ObjectStore) {
    let created = objects
        .create(net("old", "10.9.0.0/24"), None)
        .await
        .expect("create");
    let old = objects
        .patch(
            network(),
            "old",
            &json!({"metadata": {"labels": {"v": "2"}}}),
        )
        .await
        .expect("patch");
    let mut stale = net("old", "10.9.9.0/24");
    stale.metadata.resource_version = created.metadata.resource_version.clone();
    assert_ne!(
        old.metadata.resource_version,
        stale.metadata.resource_version
    );
    let err = objects
        .apply_all(
            vec![net("a", "10.9.1.0/24"), net("b", "10.9.2.0/24"), stale],
            false,
        )
        .await
        .expect_err("a stale resourceVersion must fail the apply");
    assert_eq!(err.index, 2, "the error names the third manifest: {err}");
    assert!(
        matches!(err.error, ObjectError::Conflict { .. }),
        "{}",
        err.error
    );
    assert_eq!(names(&objects).await, ["old"], "nothing else was written");
    let kept = objects.get_existing(network(), "old").await.expect("get");
    assert_eq!(kept.body["spec"]["subnet"], "10.9.0.0/24");
}

#[tokio::test]
async fn one_stale_manifest_writes_nothing_embedded() {
    let (_dir, objects) = objects();
    one_stale_manifest_writes_nothing(objects).await;
}

#[tokio::test]
async fn one_stale_manifest_writes_nothing_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    one_stale_manifest_writes_nothing(etcd_objects(&etcd).await).await;
}

/// Twenty appliers of the same three manifests, each with its own label, against
/// twenty label patches: every apply lands, and at every moment the three objects
/// carry one applier's labels (no apply is seen half done).
async fn racing_applies_land_whole(objects: ObjectStore) {
    let appliers: Vec<_> = (0..20)
        .map(|i| {
            let objects = objects.clone();
            tokio::spawn(async move {
                let trio = ["x", "y", "z"].map(|n| {
                    let mut o = net(n, "10.8.0.0/24");
                    o.metadata.labels.insert("by".into(), format!("w{i}"));
                    o
                });
                objects.apply_all(trio.to_vec(), false).await
            })
        })
        .collect();
    for a in appliers {
        let done = a.await.expect("join").expect("every apply lands");
        assert_eq!(done.len(), 3);
        let (items, _) = objects.list(network()).await.expect("list");
        let by: Vec<&String> = items.iter().map(|o| &o.metadata.labels["by"]).collect();
        assert!(
            by.iter().all(|b| *b == by[0]),
            "a half apply was seen: {by:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_applies_land_whole_embedded() {
    let (_dir, objects) = objects();
    racing_applies_land_whole(objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_applies_land_whole_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    racing_applies_land_whole(etcd_objects(&etcd).await).await;
}

/// 250 manifests are more than one etcd transaction takes (100): they land in parts,
/// all of them, with the outcomes in manifest order; a second apply changes nothing.
#[tokio::test]
async fn an_apply_larger_than_one_etcd_transaction_lands_whole() {
    let etcd = shoal_testkit::Etcd::start();
    let objects = etcd_objects(&etcd).await;
    let many: Vec<DynamicObject> = (0..250)
        .map(|i| net(&format!("n{i:03}"), "10.7.0.0/24"))
        .collect();
    let done = objects.apply_all(many.clone(), false).await.expect("apply");
    assert_eq!(done.len(), 250);
    for (i, (outcome, obj)) in done.iter().enumerate() {
        assert_eq!(*outcome, ApplyOutcome::Created);
        assert_eq!(obj.metadata.name, format!("n{i:03}"));
        let stored = objects
            .get_existing(network(), obj.name())
            .await
            .expect("get");
        assert_eq!(
            stored.metadata.resource_version,
            obj.metadata.resource_version
        );
    }
    assert_eq!(names(&objects).await.len(), 250);
    let again = objects.apply_all(many, false).await.expect("apply again");
    assert!(again.iter().all(|(o, _)| *o == ApplyOutcome::Unchanged));
}
