//! `ObjectStore::patch`, a JSON merge patch applied on the server: parallel patches all
//! land, `null` removes, what the system owns is refused, and an invalid result is
//! refused with its field path while the stored object stays as it was.

mod support;

use serde_json::json;
use shoal_api::{DynamicObject, KindDesc, Network};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;
use support::{all_land, objects};

fn network() -> &'static KindDesc {
    shoal_api::kind_of::<Network>()
}

async fn create_front(objects: &ObjectStore) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "shoal.dev/v1", "kind": "Network",
        "metadata": {"name": "front", "labels": {"team": "web"}},
        "spec": {"subnet": "10.10.1.0/24"},
    }))
    .expect("object");
    objects.create(obj, None).await.expect("create")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_patches_all_land() {
    let (_dir, objects) = objects();
    create_front(&objects).await;
    all_land(&objects, 30, |objects, i| async move {
        let change = json!({"metadata": {"labels": {format!("w{i}"): "x"}}});
        objects.patch(network(), "front", &change).await
    })
    .await;
    let n = objects.get_existing(network(), "front").await.expect("get");
    assert_eq!(n.metadata.labels.len(), 31, "{:?}", n.metadata.labels);
    assert_eq!(n.metadata.generation, Some(1), "labels are not the spec");
}

#[tokio::test]
async fn null_removes_and_a_spec_change_moves_the_generation() {
    let (_dir, objects) = objects();
    let created = create_front(&objects).await;
    let change =
        json!({"metadata": {"labels": {"team": null}}, "spec": {"subnet": "10.10.2.0/24"}});
    let n = objects
        .patch(network(), "front", &change)
        .await
        .expect("patch");
    assert!(n.metadata.labels.is_empty(), "{:?}", n.metadata.labels);
    assert_eq!(n.body["spec"]["subnet"], "10.10.2.0/24");
    assert_eq!(n.metadata.generation, Some(2));
    assert_eq!(n.metadata.uid, created.metadata.uid);
    let again = objects
        .patch(network(), "front", &change)
        .await
        .expect("patch");
    assert_eq!(
        again.metadata.resource_version, n.metadata.resource_version,
        "a patch that changes nothing writes nothing"
    );
}

#[tokio::test]
async fn refused_patches_write_nothing() {
    let (_dir, objects) = objects();
    let created = create_front(&objects).await;
    for (patch, says) in [
        (
            json!({"status": {"x": 1}}),
            "status is written by the system",
        ),
        (json!({"kind": "Service"}), "kind cannot be patched"),
        (
            json!({"metadata": {"name": "back"}}),
            "metadata.name cannot be patched",
        ),
        (json!({"spec": {"subnet": "300.1.1.0/24"}}), "spec.subnet"),
        (json!({"spec": {"subnt": "10.0.0.0/8"}}), "spec.subnt"),
        (json!(["not", "an", "object"]), "must be a JSON object"),
    ] {
        match objects.patch(network(), "front", &patch).await {
            Err(ObjectError::Invalid(m)) => assert!(m.contains(says), "{patch}: {m}"),
            other => panic!("{patch}: expected Invalid, got {other:?}"),
        }
    }
    let stored = objects.get_existing(network(), "front").await.expect("get");
    assert_eq!(stored, created, "nothing was written");
    match objects.patch(network(), "back", &json!({})).await {
        Err(ObjectError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}
