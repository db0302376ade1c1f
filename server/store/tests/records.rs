//! Cluster records changed by many writers at once (servers handing out join tokens,
//! recording node certificates): each change lands once, none is lost to a race, and
//! a change that keeps the record writes nothing. Both stores.

mod support;

use shoal_store::objects::{ObjectError, RecordChange};
use shoal_store::ObjectStore;
use support::{all_land, etcd_objects, objects};

/// Appends `i` to the comma-separated list in the record.
async fn append(objects: ObjectStore, i: usize) -> Result<(), ObjectError> {
    objects
        .modify_record("test/list", |current| {
            let mut text = current
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            text.push_str(&format!("{i},"));
            Ok::<_, ObjectError>(RecordChange::Write(text.into_bytes(), ()))
        })
        .await
}

async fn racing_changes_all_land(objects: ObjectStore) {
    all_land(&objects, 16, append).await;
    let (bytes, revision) = objects
        .record("test/list")
        .await
        .expect("read")
        .expect("written");
    let mut seen: Vec<usize> = String::from_utf8_lossy(&bytes)
        .split_terminator(',')
        .map(|n| n.parse().expect("a number"))
        .collect();
    seen.sort();
    assert_eq!(seen, (0..16).collect::<Vec<_>>(), "each change once");
    // Keeping writes nothing.
    let kept = objects
        .modify_record("test/list", |_| {
            Ok::<_, ObjectError>(RecordChange::Keep("kept"))
        })
        .await
        .expect("keep");
    assert_eq!(kept, "kept");
    let (_, after) = objects
        .record("test/list")
        .await
        .expect("read")
        .expect("there");
    assert_eq!(after, revision, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_changes_all_land_embedded() {
    let (_dir, objects) = objects();
    racing_changes_all_land(objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_changes_all_land_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    racing_changes_all_land(etcd_objects(&etcd).await).await;
}
