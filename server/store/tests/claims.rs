//! Claims: of many allocators racing for the same addresses, each address goes to
//! exactly one; a claim write that meets a held claim writes none of its others; a
//! release of a claim that changed meanwhile fails. Both stores.

mod support;

use std::collections::BTreeMap;

use shoal_store::objects::{ClaimOwner, ClaimWrite, ObjectError};
use shoal_store::ObjectStore;
use support::{etcd_objects, objects};

fn owner(name: &str) -> ClaimOwner {
    ClaimOwner {
        kind: "Task".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

fn claims_of(names: &[(&str, &str)]) -> ClaimWrite {
    ClaimWrite {
        claim: names
            .iter()
            .map(|(path, who)| (path.to_string(), owner(who)))
            .collect(),
        release: Vec::new(),
    }
}

/// Sixteen allocators each try to take the same eight addresses, one at a time:
/// every address ends up held by exactly one of them, the one whose claim landed.
async fn racing_allocators_never_share_an_address(objects: ObjectStore) {
    let racers: Vec<_> = (0..16)
        .map(|r| {
            let objects = objects.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                for ip in 2..10 {
                    let path = format!("ipam/net/10.0.0.{ip}");
                    let who = format!("racer-{r}");
                    match objects.write_claims(claims_of(&[(&path, &who)])).await {
                        Ok(()) => won.push(path),
                        Err(ObjectError::AlreadyExists { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                (format!("racer-{r}"), won)
            })
        })
        .collect();
    let mut winners: BTreeMap<String, String> = BTreeMap::new();
    for racer in racers {
        let (who, won) = racer.await.expect("join");
        for path in won {
            assert!(
                winners.insert(path.clone(), who.clone()).is_none(),
                "{path} was handed out twice"
            );
        }
    }
    assert_eq!(winners.len(), 8, "every address went to someone");
    let held = objects.claims("ipam/net/").await.expect("list");
    for claim in held {
        assert_eq!(
            winners.get(&claim.path),
            Some(&claim.owner.name),
            "{claim:?}"
        );
    }
}

async fn a_held_claim_stops_the_whole_write(objects: ObjectStore) {
    objects
        .write_claims(claims_of(&[("ipam/n/10.0.0.2", "a")]))
        .await
        .expect("first");
    let e = objects
        .write_claims(claims_of(&[
            ("ipam/n/10.0.0.3", "b"),
            ("ipam/n/10.0.0.2", "b"),
        ]))
        .await
        .expect_err("10.0.0.2 is held");
    assert!(
        e.to_string().contains("10.0.0.2"),
        "names the held claim: {e}"
    );
    let held = objects.claims("ipam/n/").await.expect("list");
    assert_eq!(held.len(), 1, "10.0.0.3 was not written either: {held:?}");
    // A release at a stale revision fails; at the current one it frees the address.
    let mut stale = held[0].clone();
    stale.revision -= 1;
    let release = |c| ClaimWrite {
        claim: Vec::new(),
        release: vec![c],
    };
    assert!(objects.write_claims(release(stale)).await.is_err());
    objects
        .write_claims(release(held[0].clone()))
        .await
        .expect("release");
    assert!(objects.claims("ipam/n/").await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_allocators_never_share_an_address_embedded() {
    let (_dir, objects) = objects();
    racing_allocators_never_share_an_address(objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_allocators_never_share_an_address_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    racing_allocators_never_share_an_address(etcd_objects(&etcd).await).await;
}

#[tokio::test]
async fn a_held_claim_stops_the_whole_write_embedded() {
    let (_dir, objects) = objects();
    a_held_claim_stops_the_whole_write(objects).await;
}

#[tokio::test]
async fn a_held_claim_stops_the_whole_write_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    a_held_claim_stops_the_whole_write(etcd_objects(&etcd).await).await;
}
