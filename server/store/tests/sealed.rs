//! Objects with sealed values (Secrets and Configs): the value is never part of the
//! object, goes with it on delete, and no value stays sealed against a keyring that
//! changed while it was being written. Both stores. "Sealing" here is a stand-in the
//! test can read: the keyring's bytes, a colon, the value.

mod support;

use shoal_api::{kind_of, DynamicObject, Secret, ValueSpec};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;
use support::{etcd_objects, objects};

fn secret(name: &str) -> DynamicObject {
    DynamicObject::from_typed(&Secret::new(name, ValueSpec::default())).expect("object")
}

fn seal_with(ring: &[u8], value: &str) -> Vec<u8> {
    let mut out = ring.to_vec();
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    out
}

fn ring_of(sealed: &[u8]) -> &[u8] {
    sealed.split(|b| *b == b':').next().unwrap_or_default()
}

async fn create(objects: ObjectStore, i: usize) -> Result<(), ObjectError> {
    objects
        .create_sealed(secret(&format!("s{i}")), |ring| {
            Ok::<_, ObjectError>(seal_with(ring, &format!("value-{i}")))
        })
        .await
        .map(|_| ())
}

async fn values_follow_the_keyring(objects: ObjectStore) {
    assert!(objects
        .create_keyring(b"ring1".to_vec())
        .await
        .expect("ring"));
    assert!(
        !objects
            .create_keyring(b"other".to_vec())
            .await
            .expect("ring"),
        "one ring"
    );
    // Creates race a change of the ring and the reseal that follows it.
    let writers: Vec<_> = (0..12)
        .map(|i| tokio::spawn(create(objects.clone(), i)))
        .collect();
    objects
        .modify_keyring(|_| Ok::<_, ObjectError>((Some(b"ring2".to_vec()), ())))
        .await
        .expect("change the ring");
    let resealed = objects
        .reseal_all(|ring, value| {
            Ok::<_, ObjectError>((ring_of(&value.bytes) != ring).then(|| {
                let plain = String::from_utf8_lossy(&value.bytes);
                let plain = plain.split_once(':').map_or("", |(_, v)| v).to_string();
                seal_with(ring, &plain)
            }))
        })
        .await
        .expect("reseal");
    for w in writers {
        w.await.expect("join").expect("every create lands");
    }
    let kind = kind_of::<Secret>();
    for i in 0..12 {
        let sealed = objects
            .sealed(kind, &format!("s{i}"))
            .await
            .expect("read")
            .expect("a value");
        assert_eq!(
            sealed,
            seal_with(b"ring2", &format!("value-{i}")),
            "s{i} is under the ring as it is now ({resealed} resealed)"
        );
    }
    let (listed, _) = objects.list(kind).await.expect("list");
    assert_eq!(listed.len(), 12);
    let text = serde_json::to_string(&listed).expect("json");
    assert!(!text.contains("value-"), "no value in the objects: {text}");

    // Pruning sees every value.
    let mut seen = 0;
    objects
        .prune_keyring(|_, values| {
            seen = values.len();
            Ok::<_, ObjectError>(Some(b"ring2".to_vec()))
        })
        .await
        .expect("prune");
    assert_eq!(seen, 12);

    // A delete takes the value with it; a second create of the name is refused.
    let gone = objects.delete_sealed(kind, "s0").await.expect("delete");
    assert_eq!(gone.map(|o| o.metadata.name), Some("s0".to_string()));
    assert!(objects.sealed(kind, "s0").await.expect("read").is_none());
    assert!(objects
        .delete_sealed(kind, "s0")
        .await
        .expect("again")
        .is_none());
    let twice = create(objects.clone(), 1).await;
    assert!(
        matches!(twice, Err(ObjectError::AlreadyExists { .. })),
        "{twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_follow_the_keyring_embedded() {
    let (_dir, objects) = objects();
    values_follow_the_keyring(objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_follow_the_keyring_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    values_follow_the_keyring(etcd_objects(&etcd).await).await;
}
