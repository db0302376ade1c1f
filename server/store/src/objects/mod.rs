//! Objects on top of the key-value store: the metadata rules every writer follows, and
//! every loop over the store (retries, watches), so no other crate needs the raw store.
//!
//! - `keys`: where objects live; `codec`: stored bytes ⇄ objects;
//! - `rules`: what the server sets and what the user owns;
//! - `write`: create, update, delete, rename, modify; `batch`: many at once;
//! - `apply`: declarative create-or-update of many manifests as one transaction;
//! - `patch`: a JSON merge patch applied at the current revision;
//! - `claims`: keys that exist once per thing handed out (addresses, VXLAN ids);
//! - `compact`: history older than a retention is forgotten;
//! - `retry`: the one retry policy of read-modify-write;
//! - `follow`: the one list → watch → relist loop; `watch`: object watches for clients;
//! - `heartbeats`: node heartbeat keys on leases.
//!
//! # Guarantees
//! - `metadata.generation` starts at 1 and moves only when the user-owned body (spec,
//!   labels and annotations don't count) changes.
//! - `uid` and `creationTimestamp` are set once, by the server.
//! - Every write compares on the revision it read: a lost race is `Conflict`, never a
//!   silent overwrite.
//! - Deleting an object with finalizers only sets `deletionTimestamp`; it is removed
//!   when an update clears the last finalizer.

mod apply;
mod batch;
mod claims;
mod codec;
mod compact;
mod follow;
mod heartbeats;
mod keys;
mod patch;
mod records;
mod retry;
mod rules;
mod sealed;
mod watch;
mod write;

use std::sync::Arc;

use shoal_api::{DynamicObject, KindDesc, Resource};

use crate::{Revision, Store, StoreError};

pub use apply::{ApplyError, ApplyOutcome};
pub use claims::{Claim, ClaimOwner, ClaimWrite};
pub use follow::{Follower, Item};
pub use keys::{kind_prefix, object_key, HEARTBEAT_PREFIX, ROOT};
pub use records::RecordChange;
pub use rules::user_fields_equal;
pub use sealed::{SealedValue, KEYRING_RECORD};
pub use watch::{ChangeType, ObjectWatchEvent, ObjectWatchStream};
pub use write::DeleteOutcome;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{kind}/{name} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind}/{name} already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("{kind}/{name} was changed by someone else (resourceVersion {current}, you had {expected}); get it again and retry")]
    Conflict {
        kind: String,
        name: String,
        expected: Revision,
        current: Revision,
    },
    /// A write the server retried against the latest version lost every race: others
    /// are changing the object faster than it could land. (A write with the client's
    /// own `resourceVersion` is not retried: that is a `Conflict`.)
    #[error("{kind}/{name} is being changed by others faster than this write could land ({tries} tries, last at resourceVersion {current}); try again")]
    Contended {
        kind: String,
        name: String,
        tries: u32,
        current: Revision,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored {key} is unreadable: {why}")]
    Corrupt { key: String, why: String },
}

pub type Result<T, E = ObjectError> = std::result::Result<T, E>;

/// The object layer. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStore {
    store: Arc<dyn Store>,
}

impl ObjectStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ObjectStore { store }
    }

    /// `embedded` or `etcd`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    fn map_err(&self, e: StoreError, kind: &str, name: &str) -> ObjectError {
        match e {
            StoreError::NotFound { .. } => ObjectError::NotFound {
                kind: kind.into(),
                name: name.into(),
            },
            StoreError::AlreadyExists { .. } => ObjectError::AlreadyExists {
                kind: kind.into(),
                name: name.into(),
            },
            StoreError::Conflict {
                expected, current, ..
            } => ObjectError::Conflict {
                kind: kind.into(),
                name: name.into(),
                expected,
                current,
            },
            other => ObjectError::Store(other),
        }
    }

    pub async fn get(&self, kind: &KindDesc, name: &str) -> Result<Option<DynamicObject>> {
        match self.store.get(&object_key(kind, name)).await? {
            Some(kv) => codec::decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// The object, or `NotFound`.
    pub async fn get_existing(&self, kind: &KindDesc, name: &str) -> Result<DynamicObject> {
        self.get(kind, name)
            .await?
            .ok_or_else(|| ObjectError::NotFound {
                kind: kind.kind.into(),
                name: name.into(),
            })
    }

    pub async fn get_typed<R: Resource>(&self, name: &str) -> Result<Option<R>> {
        let kind = shoal_api::kind_of::<R>();
        match self.get(kind, name).await? {
            Some(obj) => codec::typed(&obj, || object_key(kind, name)).map(Some),
            None => Ok(None),
        }
    }

    pub async fn list(&self, kind: &KindDesc) -> Result<(Vec<DynamicObject>, Revision)> {
        let list = self.store.list(&kind_prefix(kind)).await?;
        let items = list
            .items
            .iter()
            .map(codec::decode)
            .collect::<Result<_>>()?;
        Ok((items, list.revision))
    }

    /// Every object of `R`'s kind, typed; an unreadable one is reported per item.
    pub async fn list_typed<R: Resource>(&self) -> Result<(Vec<Result<R>>, Revision)> {
        let list = self
            .store
            .list(&kind_prefix(shoal_api::kind_of::<R>()))
            .await?;
        Ok((
            list.items.iter().map(codec::decode_typed).collect(),
            list.revision,
        ))
    }

    /// Follows `R`'s kind, typed (see [`Follower`]); runs until dropped.
    pub async fn follow<R: Resource>(&self, follower: &mut impl Follower<R>) {
        let prefix = kind_prefix(shoal_api::kind_of::<R>());
        follow::follow(&*self.store, &prefix, codec::decode_typed, follower).await
    }

    /// Follows `kind` as untyped objects: for the API server's watch cache.
    pub async fn follow_objects(
        &self,
        kind: &KindDesc,
        follower: &mut impl Follower<DynamicObject>,
    ) {
        follow::follow(&*self.store, &kind_prefix(kind), codec::decode, follower).await
    }

    /// Follows `kind` reading only what `read` takes from each stored JSON value: for
    /// the dispatcher, which needs one field and passes the rest on as it is stored.
    pub async fn follow_stored<T: Send>(
        &self,
        kind: &KindDesc,
        read: impl Fn(&[u8]) -> T + Send + Sync,
        follower: &mut impl Follower<T>,
    ) {
        let read = |kv: &crate::KeyValue| Ok(read(&kv.value));
        follow::follow(&*self.store, &kind_prefix(kind), read, follower).await
    }
}
