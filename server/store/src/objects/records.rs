//! Cluster records: a few opaque values the servers share that are not objects (the
//! cluster CA, the join tokens), under `/shoal/cluster/`. Whatever is secret in them
//! is sealed by the caller before it gets here; the store only keeps bytes.

use super::follow::{follow, Follower};
use super::keys::ROOT;
use super::{ObjectError, ObjectStore, Result};
use crate::{Revision, StoreError};

fn record_key(name: &str) -> String {
    format!("{ROOT}cluster/{name}")
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
    pub async fn replace_record(
        &self,
        name: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<()> {
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
