//! Objects with a sealed value beside them (Secrets and Configs): the object at its
//! usual key, the value at `/shoal/sealed/<plural>/<name>`, so no read of objects
//! (get, list, watch) ever carries it. The keyring the values are sealed under is the
//! record `value-keys`. The store only keeps bytes; the caller seals and opens.
//!
//! Every write of a value commits only while the keyring is at the revision the value
//! was sealed against (the transaction rewrites the keyring as it was, which is the
//! compare), and every change of the keyring moves that revision. So a key is dropped
//! from the ring only when no value written since the ring was read can be under it.

use shoal_api::{DynamicObject, KindDesc};

use super::codec::{decode, desc_of, encode};
use super::keys::{object_key, ROOT};
use super::retry::Tries;
use super::rules::stamp_new;
use super::{ObjectError, ObjectStore, Result};
use crate::{BatchOp, Revision, StoreError};

/// The record holding the keyring, sealed under the cluster key.
pub const KEYRING_RECORD: &str = "value-keys";

fn sealed_prefix() -> String {
    format!("{ROOT}sealed/")
}

fn sealed_key(kind: &KindDesc, name: &str) -> String {
    format!("{}{}/{name}", sealed_prefix(), kind.plural)
}

/// One sealed value as stored.
pub struct SealedValue {
    /// `secrets/db-pass`: the kind's plural and the name.
    pub path: String,
    pub bytes: Vec<u8>,
    revision: Revision,
}

/// A lost race on the keyring or on one of the keys written with it.
fn lost_race(e: &StoreError) -> Option<Revision> {
    match e {
        StoreError::Conflict { current, .. } => Some(*current),
        _ => None,
    }
}

impl ObjectStore {
    /// The sealed keyring and its revision; `Invalid` until a server made it.
    async fn keyring_at(&self) -> Result<(Vec<u8>, Revision)> {
        self.record(KEYRING_RECORD).await?.ok_or_else(|| {
            ObjectError::Invalid("no value keyring yet: the server makes it on start".into())
        })
    }

    /// Makes the keyring unless there is one; false if there was.
    pub async fn create_keyring(&self, sealed: Vec<u8>) -> Result<bool> {
        self.create_record(KEYRING_RECORD, sealed).await
    }

    /// The keyring's bytes now.
    pub async fn keyring(&self) -> Result<Vec<u8>> {
        self.keyring_at().await.map(|(bytes, _)| bytes)
    }

    /// Creates `obj` and its value in one step; `seal` seals the value against the
    /// keyring it is given (and is asked again if the keyring changes meanwhile).
    pub async fn create_sealed<E: From<ObjectError>>(
        &self,
        obj: DynamicObject,
        mut seal: impl FnMut(&[u8]) -> std::result::Result<Vec<u8>, E>,
    ) -> std::result::Result<DynamicObject, E> {
        let kind = desc_of(&obj)?;
        let mut obj = obj;
        stamp_new(&mut obj.metadata);
        let mut tries = Tries::new(kind.kind, obj.name());
        loop {
            tries.begin().await?;
            let (ring, ring_revision) = self.keyring_at().await?;
            let value = seal(&ring)?;
            let ops = vec![
                BatchOp::Create {
                    key: object_key(kind, obj.name()),
                    value: encode(&obj)?,
                    lease: None,
                },
                BatchOp::Create {
                    key: sealed_key(kind, obj.name()),
                    value,
                    lease: None,
                },
                keyring_compare(ring, ring_revision),
            ];
            match self.store.transact(ops).await {
                Ok(revisions) => {
                    obj.metadata.resource_version = revisions.first().map(|r| r.to_string());
                    return Ok(obj);
                }
                Err(e) => match lost_race(&e) {
                    Some(current) => tries.lost(current),
                    None => return Err(self.map_err(e, kind.kind, obj.name()).into()),
                },
            }
        }
    }

    /// The sealed value of `kind/name`, if there is one.
    pub async fn sealed(&self, kind: &KindDesc, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .store
            .get(&sealed_key(kind, name))
            .await?
            .map(|kv| kv.value))
    }

    /// Deletes `kind/name` and its value together; None if there was no object.
    pub async fn delete_sealed(
        &self,
        kind: &KindDesc,
        name: &str,
    ) -> Result<Option<DynamicObject>> {
        let mut tries = Tries::new(kind.kind, name);
        loop {
            tries.begin().await?;
            let Some(kv) = self.store.get(&object_key(kind, name)).await? else {
                return Ok(None);
            };
            let obj = decode(&kv)?;
            let mut ops = vec![BatchOp::Delete {
                key: object_key(kind, name),
                expected: kv.mod_revision,
            }];
            if let Some(value) = self.store.get(&sealed_key(kind, name)).await? {
                ops.push(BatchOp::Delete {
                    key: sealed_key(kind, name),
                    expected: value.mod_revision,
                });
            }
            match self.store.transact(ops).await {
                Ok(_) => return Ok(Some(obj)),
                Err(e) => match lost_race(&e) {
                    Some(current) => tries.lost(current),
                    None => return Err(self.map_err(e, kind.kind, name)),
                },
            }
        }
    }

    async fn sealed_values(&self) -> Result<Vec<SealedValue>> {
        let prefix = sealed_prefix();
        let listed = self.store.list(&prefix).await?;
        Ok(listed
            .items
            .into_iter()
            .map(|kv| SealedValue {
                path: kv.key.strip_prefix(&prefix).unwrap_or(&kv.key).to_string(),
                bytes: kv.value,
                revision: kv.mod_revision,
            })
            .collect())
    }

    /// Changes the keyring: `change` gets it and returns its new bytes (None: keep it).
    pub async fn modify_keyring<T, E: From<ObjectError>>(
        &self,
        mut change: impl FnMut(&[u8]) -> std::result::Result<(Option<Vec<u8>>, T), E>,
    ) -> std::result::Result<T, E> {
        use super::records::RecordChange;
        self.modify_record(KEYRING_RECORD, |current| {
            let ring = current.ok_or_else(|| {
                E::from(ObjectError::Invalid("no value keyring to change".into()))
            })?;
            Ok(match change(ring)? {
                (Some(bytes), out) => RecordChange::Write(bytes, out),
                (None, out) => RecordChange::Keep(out),
            })
        })
        .await
    }

    /// Seals every value again where `reseal(keyring, value)` says (Some: its new
    /// bytes), each against the keyring as it stands; gives how many changed.
    pub async fn reseal_all<E: From<ObjectError>>(
        &self,
        mut reseal: impl FnMut(&[u8], &SealedValue) -> std::result::Result<Option<Vec<u8>>, E>,
    ) -> std::result::Result<usize, E> {
        let mut tries = Tries::new("record", KEYRING_RECORD);
        let mut changed = 0;
        'again: loop {
            tries.begin().await?;
            let (ring, mut ring_revision) = self.keyring_at().await?;
            for value in self.sealed_values().await? {
                let Some(bytes) = reseal(&ring, &value)? else {
                    continue;
                };
                let ops = vec![
                    BatchOp::Update {
                        key: format!("{}{}", sealed_prefix(), value.path),
                        value: bytes,
                        expected: value.revision,
                        lease: None,
                    },
                    keyring_compare(ring.clone(), ring_revision),
                ];
                match self.store.transact(ops).await {
                    Ok(revisions) => {
                        changed += 1;
                        ring_revision = revisions.last().copied().unwrap_or(ring_revision);
                    }
                    // Deleted meanwhile: nothing to reseal.
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => match lost_race(&e) {
                        Some(current) => {
                            tries.lost(current);
                            continue 'again;
                        }
                        None => return Err(ObjectError::from(e).into()),
                    },
                }
            }
            return Ok(changed);
        }
    }

    /// Prunes the keyring against the values: `prune(keyring, values)` returns the
    /// ring's new bytes (None: keep it), written only if no value was written since
    /// the ring was read.
    pub async fn prune_keyring<E: From<ObjectError>>(
        &self,
        mut prune: impl FnMut(&[u8], &[SealedValue]) -> std::result::Result<Option<Vec<u8>>, E>,
    ) -> std::result::Result<bool, E> {
        let mut tries = Tries::new("record", KEYRING_RECORD);
        loop {
            tries.begin().await?;
            let (ring, ring_revision) = self.keyring_at().await?;
            let values = self.sealed_values().await?;
            let Some(bytes) = prune(&ring, &values)? else {
                return Ok(false);
            };
            let update = BatchOp::Update {
                key: keyring_key(),
                value: bytes,
                expected: ring_revision,
                lease: None,
            };
            match self.store.transact(vec![update]).await {
                Ok(_) => return Ok(true),
                Err(e) => match lost_race(&e) {
                    Some(current) => tries.lost(current),
                    None => return Err(ObjectError::from(e).into()),
                },
            }
        }
    }
}

fn keyring_key() -> String {
    super::records::record_key(KEYRING_RECORD)
}

/// The keyring written back as it was, at the revision it was read: the transaction's
/// compare that it did not change.
fn keyring_compare(ring: Vec<u8>, revision: Revision) -> BatchOp {
    BatchOp::Update {
        key: keyring_key(),
        value: ring,
        expected: revision,
        lease: None,
    }
}
