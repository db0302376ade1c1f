//! `ObjectStore::modify`, the one read-modify-write: it wins races by reading again,
//! writes nothing when told so, and moves `generation` only when the spec changed.

mod support;

use shoal_api::{DynamicObject, Network, NetworkSpec, Resource};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;
use support::{all_land, objects};

/// Stored as a user would apply it: `driver` left out, so decoding fills its default.
async fn create_front(objects: &ObjectStore) {
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.dev/v1", "kind": "Network",
        "metadata": {"name": "front"}, "spec": {"subnet": "10.10.1.0/24"},
    }))
    .expect("object");
    objects.create(obj, None).await.expect("create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_modifies_all_land() {
    let (_dir, objects) = objects();
    create_front(&objects).await;
    all_land(&objects, 30, |objects, i| async move {
        objects
            .modify::<Network>("front", |n| {
                n.metadata.labels.insert(format!("w{i}"), "x".into());
                Ok(true)
            })
            .await
    })
    .await;
    let n: Network = objects
        .get_typed("front")
        .await
        .expect("get")
        .expect("there");
    assert_eq!(n.metadata.labels.len(), 30, "{:?}", n.metadata.labels);
    assert_eq!(n.metadata.generation, Some(1), "labels are not the spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_moves_only_with_a_spec_change() {
    let (_dir, objects) = objects();
    create_front(&objects).await;
    let stored = objects
        .get(shoal_api::kind_of::<Network>(), "front")
        .await
        .expect("get");
    let before = stored.expect("there").body;
    objects
        .modify::<Network>("front", |n| {
            n.metadata.annotations.insert("a".into(), "b".into());
            Ok(true)
        })
        .await
        .expect("modify");
    let after = objects
        .get(shoal_api::kind_of::<Network>(), "front")
        .await
        .expect("get");
    let after = after.expect("there");
    assert_eq!(
        after.body, before,
        "a default filled in by decoding is not written"
    );
    assert_eq!(after.metadata.generation, Some(1));
    let n = objects
        .modify::<Network>("front", |n| {
            n.spec = NetworkSpec {
                subnet: Some("10.10.2.0/24".into()),
                ..n.spec.clone()
            };
            Ok(true)
        })
        .await
        .expect("modify")
        .expect("written");
    assert_eq!(n.metadata().generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_when_told_so_and_refusals_pass_through() {
    let (_dir, objects) = objects();
    create_front(&objects).await;
    let rv = |o: &ObjectStore| {
        let o = o.clone();
        async move {
            o.get(shoal_api::kind_of::<Network>(), "front")
                .await
                .expect("get")
                .and_then(|n| n.metadata.resource_version)
        }
    };
    let first = rv(&objects).await;
    let unchanged = objects
        .modify::<Network>("front", |_| Ok(false))
        .await
        .expect("modify");
    assert!(unchanged.is_none());
    assert_eq!(rv(&objects).await, first, "no write");
    let refused = objects
        .modify::<Network>("front", |_| Err(ObjectError::Invalid("no".into())))
        .await;
    assert!(
        matches!(refused, Err(ObjectError::Invalid(_))),
        "{refused:?}"
    );
    let missing = objects.modify::<Network>("back", |_| Ok(true)).await;
    assert!(
        matches!(missing, Err(ObjectError::NotFound { .. })),
        "{missing:?}"
    );
}
