//! Cluster records: a few opaque values the servers share that are not objects (the
//! cluster CA, the join tokens), under `/shoal/cluster/`. Whatever is secret in them
//! is sealed by the caller before it gets here; the store only keeps bytes.

use super::follow::{follow, Follower};
use super::keys::ROOT;
use super::retry::Tries;
use super::{ObjectError, ObjectStore, Result};
use crate::{Revision, StoreError};

pub(super) fn record_key(name: &str) -> String {
    format!("{ROOT}cluster/{name}")
}

/// What a change of a record decided, with what the caller gets back.
pub enum RecordChange<T> {
    /// Leave the record as it is.
    Keep(T),
    /// Write these bytes in its place (or as it, if there is none).
    Write(Vec<u8>, T),
}

impl ObjectStore {
    /// The record `name` and its revision, if there is one.
    pub async fn record(&self, name: &str) -> Result<Option<(Vec<u8>, Revision)>> {
        Ok(self
            .store
            .get(&record_key(name))
            .await?
            .map(|kv| (kv.value, kv.mod_revision)))
    }

    /// Creates the record `name` unless there is one; false if there was (another
    /// server made it first, and that one is the cluster's).
    pub async fn create_record(&self, name: &str, value: Vec<u8>) -> Result<bool> {
        match self.store.create(&record_key(name), value, None).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the record `name` if it is still at `expected`.
    async fn replace_record(&self, name: &str, value: Vec<u8>, expected: Revision) -> Result<()> {
        self.store
            .update(&record_key(name), value, expected, None)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::Conflict {
                    expected, current, ..
                } => ObjectError::Conflict {
                    kind: "record".into(),
                    name: name.into(),
                    expected,
                    current,
                },
                other => other.into(),
            })
    }

    /// Reads the record `name` (None: there is none), lets `change` decide, and writes
    /// what it says at the revision read: a read-modify-write on the one retry policy,
    /// reading again after a lost race.
    pub async fn modify_record<T, E: From<ObjectError>>(
        &self,
        name: &str,
        mut change: impl FnMut(Option<&[u8]>) -> std::result::Result<RecordChange<T>, E>,
    ) -> std::result::Result<T, E> {
        let mut tries = Tries::new("record", name);
        loop {
            tries.begin().await?;
            let current = self.record(name).await?;
            let (bytes, out) = match change(current.as_ref().map(|(b, _)| b.as_slice()))? {
                RecordChange::Keep(out) => return Ok(out),
                RecordChange::Write(bytes, out) => (bytes, out),
            };
            let lost = match current {
                None => !self.create_record(name, bytes).await?,
                Some((_, revision)) => match self.replace_record(name, bytes, revision).await {
                    Ok(()) => false,
                    Err(ObjectError::Conflict { current, .. }) => {
                        tries.lost(current);
                        true
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            if !lost {
                return Ok(out);
            }
        }
    }

    /// Deletes the record `name`; false if there was none.
    pub async fn delete_record(&self, name: &str) -> Result<bool> {
        match self.store.delete(&record_key(name), None).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Follows the records under `prefix/` (items are named without it); runs until
    /// dropped.
    pub async fn follow_records(&self, prefix: &str, follower: &mut impl Follower<Vec<u8>>) {
        let prefix = record_key(&format!("{prefix}/"));
        follow(&*self.store, &prefix, |kv| Ok(kv.value.clone()), follower).await
    }
}
