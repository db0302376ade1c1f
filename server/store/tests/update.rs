//! `ObjectStore::update`: with the client's `resourceVersion` it writes only at that
//! revision and a stale one is a `Conflict` naming it; without one it lands at the
//! latest revision however many others write at once.

mod support;

use serde_json::json;
use shoal_api::{DynamicObject, Network};
use shoal_store::objects::ObjectError;
use support::{all_land, objects};

fn front(label: &str, resource_version: Option<&str>) -> DynamicObject {
    let mut obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "shoal.dev/v1", "kind": "Network",
        "metadata": {"name": "front", "labels": {"by": label}},
        "spec": {"subnet": "10.10.1.0/24"},
    }))
    .expect("object");
    obj.metadata.resource_version = resource_version.map(str::to_string);
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_without_a_resource_version_all_land() {
    let (_dir, objects) = objects();
    objects
        .create(front("first", None), None)
        .await
        .expect("create");
    all_land(&objects, 30, |objects, i| async move {
        objects.update(front(&format!("w{i}"), None), None).await
    })
    .await;
    let n = objects
        .get_typed::<Network>("front")
        .await
        .expect("get")
        .expect("there");
    assert!(
        n.metadata.labels["by"].starts_with('w'),
        "{:?}",
        n.metadata.labels
    );
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict_naming_it() {
    let (_dir, objects) = objects();
    let created = objects
        .create(front("first", None), None)
        .await
        .expect("create");
    let stale = created.metadata.resource_version.clone().expect("rv");
    let moved = objects
        .update(front("second", Some(&stale)), None)
        .await
        .expect("the first update at that version lands");
    match objects.update(front("third", Some(&stale)), None).await {
        Err(e @ ObjectError::Conflict { .. }) => {
            let m = e.to_string();
            assert!(m.contains(&format!("you had {stale}")), "{m}");
            let now = moved.metadata.resource_version.expect("rv");
            assert!(m.contains(&format!("resourceVersion {now}")), "{m}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}
