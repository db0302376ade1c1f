//! Objects on top of the key-value store: the metadata rules every writer follows.
//!
//! Keys are `/shoal/<plural>/<name>`; values are the object's JSON without
//! `resourceVersion`, which is the key's `mod_revision` and is filled in on read.
//!
//! # Guarantees
//! - `metadata.generation` starts at 1 and moves only when the user-owned body (spec,
//!   labels and annotations don't count) changes.
//! - `uid` and `creationTimestamp` are set once, by the server.
//! - Every write compares on the revision it read: a lost race is `Conflict`, never a
//!   silent overwrite.
//! - Deleting an object with finalizers only sets `deletionTimestamp`; it is removed
//!   when an update clears the last finalizer.

use std::sync::Arc;

use chrono::Utc;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use shoal_api::{DynamicObject, KindDesc, Resource};

use crate::{EventType, KeyValue, LeaseId, Revision, Store, StoreError};

pub const ROOT: &str = "/shoal/";

/// `<HEARTBEAT_PREFIX><node>` exists while the node's heartbeat lease is alive.
pub const HEARTBEAT_PREFIX: &str = "/shoal/heartbeats/";

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
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored {key} is unreadable: {why}")]
    Corrupt { key: String, why: String },
}

pub type Result<T, E = ObjectError> = std::result::Result<T, E>;

/// How often a read-modify-write reads again after losing a race before it reports the
/// conflict. With a short pause between tries, sixteen outlast any burst of writers
/// this store has seen (50 parallel `scale`s of one service).
const RETRIES: u32 = 16;

/// The pause before try `attempt + 1`: a few milliseconds, growing, jittered so that
/// writers who collided do not collide again in step.
async fn pause_before_retry(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    let base = 2u64 << attempt.min(5);
    // A fresh RandomState is seeded differently each time: cheap randomness.
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % base;
    tokio::time::sleep(std::time::Duration::from_millis(base / 2 + jitter)).await;
}

fn gave_up(kind: &str, name: &str, expected: Revision, current: Revision) -> ObjectError {
    ObjectError::Conflict {
        kind: kind.into(),
        name: name.into(),
        expected,
        current,
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// What `delete` did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    Deleted(DynamicObject),
    /// Finalizers remain: the object is marked and waits for its controllers.
    Pending(DynamicObject),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectWatchEvent {
    pub change: ChangeType,
    pub object: DynamicObject,
    pub revision: Revision,
}

pub type ObjectWatchStream = BoxStream<'static, Result<ObjectWatchEvent>>;

/// One change from [`ObjectStore::watch_typed`], at its revision.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedChange<R> {
    /// Created or changed: the object as it is now.
    Applied(R, Revision),
    /// Deleted: its name.
    Deleted(String, Revision),
}

pub type TypedWatchStream<R> = BoxStream<'static, Result<TypedChange<R>>>;

/// The object layer. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStore {
    store: Arc<dyn Store>,
}

pub fn kind_prefix(kind: &KindDesc) -> String {
    format!("{ROOT}{}/", kind.plural)
}

pub fn object_key(kind: &KindDesc, name: &str) -> String {
    format!("{ROOT}{}/{name}", kind.plural)
}

fn desc_of(obj: &DynamicObject) -> Result<&'static KindDesc> {
    obj.kind_desc()
        .ok_or_else(|| ObjectError::Invalid(format!("unknown kind {:?}", obj.kind)))
}

fn decode(kv: &KeyValue) -> Result<DynamicObject> {
    let mut obj: DynamicObject =
        serde_json::from_slice(&kv.value).map_err(|e| ObjectError::Corrupt {
            key: kv.key.clone(),
            why: e.to_string(),
        })?;
    obj.metadata.resource_version = Some(kv.mod_revision.to_string());
    Ok(obj)
}

/// Straight from the stored bytes to the kind's type: caches decode every event, and
/// going through `DynamicObject` (bytes → JSON values → struct) costs twice as much.
fn decode_typed<R: Resource>(kv: &KeyValue) -> Result<R> {
    let mut obj: R = serde_json::from_slice(&kv.value).map_err(|e| ObjectError::Corrupt {
        key: kv.key.clone(),
        why: e.to_string(),
    })?;
    obj.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(obj)
}

/// The server-set metadata of a new object.
fn stamp_new(meta: &mut shoal_api::ObjectMeta) {
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.generation = Some(1);
    meta.creation_timestamp = Some(Utc::now());
    meta.deletion_timestamp = None;
    meta.resource_version = None;
}

fn encode(obj: &DynamicObject) -> Result<Vec<u8>> {
    let mut stored = obj.clone();
    stored.metadata.resource_version = None;
    serde_json::to_vec(&stored).map_err(|e| ObjectError::Invalid(e.to_string()))
}

/// A typed object as stored: without `resourceVersion` (the store's revision is).
fn encode_typed<R: Resource>(obj: &mut R) -> Result<Vec<u8>> {
    let rv = obj.metadata_mut().resource_version.take();
    let bytes = serde_json::to_vec(obj).map_err(|e| ObjectError::Invalid(e.to_string()));
    obj.metadata_mut().resource_version = rv;
    bytes
}

/// What a batch op is swapped for once it has been handed to the store.
fn placeholder() -> crate::BatchOp {
    crate::BatchOp::Create {
        key: String::new(),
        value: Vec::new(),
        lease: None,
    }
}

fn parse_rv(obj: &DynamicObject) -> Result<Option<Revision>> {
    match &obj.metadata.resource_version {
        None => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ObjectError::Invalid(format!("metadata.resourceVersion {rv:?} is not a revision"))
        }),
    }
}

/// Whether two objects differ in anything the user owns.
pub fn user_fields_equal(a: &DynamicObject, b: &DynamicObject) -> bool {
    a.user_body() == b.user_body()
        && a.metadata.labels == b.metadata.labels
        && a.metadata.annotations == b.metadata.annotations
        && a.metadata.finalizers == b.metadata.finalizers
        && a.metadata.owner_references == b.metadata.owner_references
}

impl ObjectStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ObjectStore { store }
    }

    pub fn raw(&self) -> &Arc<dyn Store> {
        &self.store
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
            Some(kv) => decode(&kv).map(Some),
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

    pub async fn list(&self, kind: &KindDesc) -> Result<(Vec<DynamicObject>, Revision)> {
        let list = self.store.list(&kind_prefix(kind)).await?;
        let items = list.items.iter().map(decode).collect::<Result<_>>()?;
        Ok((items, list.revision))
    }

    /// Every object of `R`'s kind, typed; an unreadable one is reported per item.
    pub async fn list_typed<R: Resource>(&self) -> Result<(Vec<Result<R>>, Revision)> {
        let list = self
            .store
            .list(&kind_prefix(shoal_api::kind_of::<R>()))
            .await?;
        Ok((list.items.iter().map(decode_typed).collect(), list.revision))
    }

    /// Creates a new object, setting uid, generation and creationTimestamp.
    pub async fn create(
        &self,
        obj: DynamicObject,
        lease: Option<LeaseId>,
    ) -> Result<DynamicObject> {
        let kind = desc_of(&obj)?;
        let mut obj = obj;
        stamp_new(&mut obj.metadata);
        self.create_raw(kind, obj, lease).await
    }

    /// Stores a new object as given and fills in its resourceVersion.
    async fn create_raw(
        &self,
        kind: &KindDesc,
        mut obj: DynamicObject,
        lease: Option<LeaseId>,
    ) -> Result<DynamicObject> {
        let rev = self
            .store
            .create(&object_key(kind, obj.name()), encode(&obj)?, lease)
            .await
            .map_err(|e| self.map_err(e, &obj.kind, &obj.metadata.name))?;
        obj.metadata.resource_version = Some(rev.to_string());
        Ok(obj)
    }

    /// Replaces the user-owned parts of the object at the revision in its
    /// `resourceVersion`, keeping status and server-set metadata. Removing the last
    /// finalizer of an object being deleted deletes it.
    pub async fn update(
        &self,
        obj: DynamicObject,
        lease: Option<LeaseId>,
    ) -> Result<DynamicObject> {
        let kind = desc_of(&obj)?;
        let name = obj.name().to_string();
        let current = self.get_existing(kind, &name).await?;
        let expected = match parse_rv(&obj)? {
            Some(rv) => rv,
            None => parse_rv(&current)?.unwrap_or(0),
        };
        let merged = merge_user_fields(&current, obj);
        self.write(kind, merged, expected, lease).await
    }

    /// Writes the whole object (user fields and status) at its `resourceVersion`, for
    /// controllers that change both at once (the scheduler binding a task).
    pub async fn replace(&self, obj: DynamicObject) -> Result<DynamicObject> {
        let kind = desc_of(&obj)?;
        let current = self.get_existing(kind, obj.name()).await?;
        let expected = match parse_rv(&obj)? {
            Some(rv) => rv,
            None => parse_rv(&current)?.unwrap_or(0),
        };
        self.write(kind, merge_with_status(&current, obj), expected, None)
            .await
    }

    /// Creates many objects (as `create` does), in batches the store can group into
    /// one transaction. Each gets its own outcome.
    pub async fn create_many<R: Resource>(&self, objs: Vec<R>) -> Vec<Result<R>> {
        let kind = shoal_api::kind_of::<R>();
        let mut prepared = Vec::with_capacity(objs.len());
        for mut obj in objs {
            stamp_new(obj.metadata_mut());
            let op = encode_typed(&mut obj).map(|value| crate::BatchOp::Create {
                key: object_key(kind, obj.name()),
                value,
                lease: None,
            });
            prepared.push((obj, op));
        }
        self.run_batch(prepared).await
    }

    /// Writes many objects exactly as given, each at its `resourceVersion`, without
    /// reading first: for controllers holding a fresh copy that change spec and status
    /// together (the scheduler binding tasks). `spec_changed` bumps the generation.
    pub async fn put_many<R: Resource>(&self, objs: Vec<R>, spec_changed: bool) -> Vec<Result<R>> {
        let kind = shoal_api::kind_of::<R>();
        let mut prepared = Vec::with_capacity(objs.len());
        for mut obj in objs {
            let meta = obj.metadata_mut();
            if spec_changed {
                meta.generation = Some(meta.generation.unwrap_or(0) + 1);
            }
            let expected = meta.revision().ok_or_else(|| {
                ObjectError::Invalid(format!(
                    "{}/{}: put needs a resourceVersion",
                    R::KIND,
                    meta.name
                ))
            });
            let op = expected.and_then(|expected| {
                Ok(crate::BatchOp::Update {
                    key: object_key(kind, obj.name()),
                    value: encode_typed(&mut obj)?,
                    expected,
                    lease: None,
                })
            });
            prepared.push((obj, op));
        }
        self.run_batch(prepared).await
    }

    async fn run_batch<R: Resource>(
        &self,
        prepared: Vec<(R, Result<crate::BatchOp>)>,
    ) -> Vec<Result<R>> {
        const CHUNK: usize = 100;
        let mut out: Vec<Result<R>> = Vec::with_capacity(prepared.len());
        let mut pending: Vec<(usize, R, crate::BatchOp)> = Vec::new();
        for (obj, op) in prepared {
            match op {
                Ok(op) => {
                    pending.push((out.len(), obj, op));
                    out.push(Err(ObjectError::Invalid("not written".into())));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        // Several batches in flight: etcd pipelines them, the embedded writer groups them.
        let mut chunks: Vec<Vec<(usize, R, crate::BatchOp)>> = Vec::new();
        let mut rest = pending.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(rest.by_ref().take(CHUNK).collect());
        }
        let results: Vec<_> = futures::stream::iter(chunks)
            .map(|mut chunk| {
                let store = self.store.clone();
                async move {
                    let ops: Vec<crate::BatchOp> = chunk
                        .iter_mut()
                        .map(|(_, _, op)| std::mem::replace(op, placeholder()))
                        .collect();
                    let result = store.batch(ops).await;
                    (chunk, result)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (chunk, result) in results {
            match result {
                Ok(results) => {
                    for ((i, mut obj, _), r) in chunk.into_iter().zip(results) {
                        out[i] = match r {
                            Ok(rev) => {
                                obj.metadata_mut().resource_version = Some(rev.to_string());
                                Ok(obj)
                            }
                            Err(e) => Err(self.map_err(e, R::KIND, obj.name())),
                        };
                    }
                }
                Err(e) => {
                    for (i, _, _) in chunk {
                        out[i] = Err(ObjectError::Store(e.clone()));
                    }
                }
            }
        }
        out
    }

    /// Creates `obj` keeping the identity it carries (uid, creationTimestamp,
    /// generation): moving an object to a new name, as tasks move into slot history.
    pub async fn create_preserving_identity(&self, obj: DynamicObject) -> Result<DynamicObject> {
        let kind = desc_of(&obj)?;
        let mut obj = obj;
        obj.metadata.resource_version = None;
        if obj.metadata.uid.is_none() {
            obj.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
        }
        obj.metadata.creation_timestamp.get_or_insert_with(Utc::now);
        obj.metadata.generation.get_or_insert(1);
        self.create_raw(kind, obj, None).await
    }

    /// Writes `status` for a typed object at the resourceVersion it was read at: the
    /// controllers' way of reporting what they saw. `Conflict` means the copy was stale.
    pub async fn update_status_of<R: Resource>(
        &self,
        obj: &R,
        status: &impl serde::Serialize,
    ) -> Result<DynamicObject> {
        let kind = shoal_api::kind_of::<R>();
        let value =
            serde_json::to_value(status).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        self.update_status(kind, obj.name(), value, obj.metadata().revision())
            .await
    }

    /// Replaces `status` at the given revision (or the current one when None).
    pub async fn update_status(
        &self,
        kind: &KindDesc,
        name: &str,
        status: Value,
        expected: Option<Revision>,
    ) -> Result<DynamicObject> {
        let current = self.get_existing(kind, name).await?;
        let expected = match expected {
            Some(e) => e,
            None => parse_rv(&current)?.unwrap_or(0),
        };
        let mut next = current;
        next.body.insert("status".into(), status);
        self.write(kind, next, expected, None).await
    }

    async fn write(
        &self,
        kind: &KindDesc,
        mut obj: DynamicObject,
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> Result<DynamicObject> {
        let key = object_key(kind, obj.name());
        if obj.metadata.deletion_timestamp.is_some() && obj.metadata.finalizers.is_empty() {
            let rev = self
                .store
                .delete(&key, Some(expected))
                .await
                .map_err(|e| self.map_err(e, kind.kind, &obj.metadata.name))?;
            obj.metadata.resource_version = Some(rev.to_string());
            return Ok(obj);
        }
        let rev = self
            .store
            .update(&key, encode(&obj)?, expected, lease)
            .await
            .map_err(|e| self.map_err(e, kind.kind, &obj.metadata.name))?;
        obj.metadata.resource_version = Some(rev.to_string());
        Ok(obj)
    }

    /// Create-or-update from a manifest. Retries lost races unless the manifest pinned a
    /// `resourceVersion`. With `dry_run`, reports what would happen and writes nothing.
    pub async fn apply(
        &self,
        obj: DynamicObject,
        dry_run: bool,
    ) -> Result<(ApplyOutcome, DynamicObject)> {
        let kind = desc_of(&obj)?;
        let pinned = parse_rv(&obj)?;
        let mut seen = (0, 0);
        for attempt in 0..RETRIES {
            if attempt > 0 {
                pause_before_retry(attempt).await;
            }
            let current = self.get(kind, obj.name()).await?;
            let Some(current) = current else {
                if pinned.is_some() {
                    return Err(ObjectError::NotFound {
                        kind: obj.kind.clone(),
                        name: obj.name().into(),
                    });
                }
                if dry_run {
                    return Ok((ApplyOutcome::Created, obj));
                }
                match self.create(obj.clone(), None).await {
                    Ok(created) => return Ok((ApplyOutcome::Created, created)),
                    Err(ObjectError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e),
                }
            };
            let current_rv = parse_rv(&current)?.unwrap_or(0);
            if let Some(pinned) = pinned {
                if pinned != current_rv {
                    return Err(ObjectError::Conflict {
                        kind: obj.kind.clone(),
                        name: obj.name().into(),
                        expected: pinned,
                        current: current_rv,
                    });
                }
            }
            let merged = merge_user_fields(&current, obj.clone());
            if user_fields_equal(&current, &merged) {
                return Ok((ApplyOutcome::Unchanged, current));
            }
            if dry_run {
                return Ok((ApplyOutcome::Configured, merged));
            }
            match self.write(kind, merged, current_rv, None).await {
                Ok(updated) => return Ok((ApplyOutcome::Configured, updated)),
                Err(ObjectError::Conflict {
                    expected, current, ..
                }) if pinned.is_none() => seen = (expected, current),
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(&obj.kind, obj.name(), seen.0, seen.1))
    }

    /// Deletes, or marks for deletion when finalizers remain.
    pub async fn delete(&self, kind: &KindDesc, name: &str) -> Result<DeleteOutcome> {
        let mut seen = 0;
        for attempt in 0..RETRIES {
            if attempt > 0 {
                pause_before_retry(attempt).await;
            }
            let current = self.get_existing(kind, name).await?;
            let rv = parse_rv(&current)?.unwrap_or(0);
            seen = rv;
            let key = object_key(kind, name);
            if current.metadata.finalizers.is_empty() {
                return match self.store.delete(&key, Some(rv)).await {
                    Ok(_) => Ok(DeleteOutcome::Deleted(current)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => Err(self.map_err(e, kind.kind, name)),
                };
            }
            if current.metadata.deletion_timestamp.is_some() {
                return Ok(DeleteOutcome::Pending(current));
            }
            let mut marked = current;
            marked.metadata.deletion_timestamp = Some(Utc::now());
            match self.store.update(&key, encode(&marked)?, rv, None).await {
                Ok(rev) => {
                    marked.metadata.resource_version = Some(rev.to_string());
                    return Ok(DeleteOutcome::Pending(marked));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(self.map_err(e, kind.kind, name)),
            }
        }
        Err(gave_up(kind.kind, name, seen, seen))
    }

    /// Deletes `name` only if it is still at revision `expected` (finalizers aside): for a
    /// deletion decided on what was read, which must not hit a successor of that name.
    pub async fn delete_at(&self, kind: &KindDesc, name: &str, expected: Revision) -> Result<()> {
        self.store
            .delete(&object_key(kind, name), Some(expected))
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(e, kind.kind, name))
    }

    /// Moves the object read as `old_name` (its `resourceVersion` the precondition) to
    /// `moved.metadata.name`, as `moved` says, keeping its identity (uid, creation time,
    /// generation): one atomic store step, so no crash leaves it under both names or
    /// neither. A task moving to its history name, or `shoal rename`, goes this way.
    pub async fn rename(&self, old_name: &str, moved: DynamicObject) -> Result<DynamicObject> {
        let kind = desc_of(&moved)?;
        let expected = parse_rv(&moved)?.ok_or_else(|| {
            ObjectError::Invalid(format!(
                "{}/{old_name}: a rename needs the resourceVersion it read",
                kind.kind
            ))
        })?;
        let mut moved = moved;
        moved.metadata.resource_version = None;
        let new_name = moved.name().to_string();
        let rev = self
            .store
            .rename(
                &object_key(kind, old_name),
                expected,
                &object_key(kind, &new_name),
                encode(&moved)?,
            )
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists { .. } => self.map_err(e, kind.kind, &new_name),
                other => self.map_err(other, kind.kind, old_name),
            })?;
        moved.metadata.resource_version = Some(rev.to_string());
        Ok(moved)
    }

    /// Reads `name`, lets `f` change it and writes it back at the revision it read; a
    /// lost race reads again and calls `f` again, up to a bound, after which it is a
    /// `Conflict`. `f` returns `Ok(false)` to write nothing (then `Ok(None)`), or an
    /// error to refuse. Labels, annotations, spec and status are all written as `f`
    /// left them; server-set metadata is kept and `generation` moves if the spec did.
    /// Every read-modify-write outside a controller's cache goes through here.
    pub async fn modify<R: Resource>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut R) -> Result<bool>,
    ) -> Result<Option<R>> {
        let kind = shoal_api::kind_of::<R>();
        let mut seen = (0, 0);
        for attempt in 0..RETRIES {
            if attempt > 0 {
                pause_before_retry(attempt).await;
            }
            let current = self.get_existing(kind, name).await?;
            let rv = parse_rv(&current)?.unwrap_or(0);
            let mut typed: R = current.to_typed().map_err(|e| ObjectError::Corrupt {
                key: object_key(kind, name),
                why: e.to_string(),
            })?;
            let to_dynamic = |t: &R| {
                DynamicObject::from_typed(t).map_err(|e| ObjectError::Invalid(e.to_string()))
            };
            // As decoded, to tell what `f` changed from what decoding normalized (a
            // default written out): only a change of `f`'s is a new spec.
            let before = to_dynamic(&typed)?;
            if !f(&mut typed)? {
                return Ok(None);
            }
            let mut next = to_dynamic(&typed)?;
            if next.user_body() == before.user_body() {
                let status = next.body.remove("status");
                next.body = current.user_body();
                next.body.extend(status.map(|s| ("status".to_string(), s)));
            }
            match self
                .write(kind, merge_with_status(&current, next), rv, None)
                .await
            {
                Ok(written) => {
                    return written
                        .to_typed()
                        .map(Some)
                        .map_err(|e| ObjectError::Corrupt {
                            key: object_key(kind, name),
                            why: e.to_string(),
                        })
                }
                Err(ObjectError::Conflict {
                    expected, current, ..
                }) => seen = (expected, current),
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(kind.kind, name, seen.0, seen.1))
    }

    /// Changes to objects of `kind` from revision `from` (0: from now). A deleted
    /// object carries its last value with the deletion's revision.
    pub async fn watch(&self, kind: &KindDesc, from: Revision) -> Result<ObjectWatchStream> {
        let stream = self.store.watch(&kind_prefix(kind), from).await?;
        Ok(stream
            .map(|item| {
                let ev = item?;
                let revision = ev.revision();
                let (change, kv) = match (ev.event_type, ev.prev) {
                    (EventType::Delete, Some(prev)) => (ChangeType::Deleted, prev),
                    (EventType::Delete, None) => {
                        return Err(ObjectError::Corrupt {
                            key: ev.kv.key,
                            why: "delete event without the previous value".into(),
                        })
                    }
                    (EventType::Put, None) => (ChangeType::Added, ev.kv),
                    (EventType::Put, Some(_)) => (ChangeType::Modified, ev.kv),
                };
                let mut object = decode(&kv)?;
                if change == ChangeType::Deleted {
                    object.metadata.resource_version = Some(revision.to_string());
                }
                Ok(ObjectWatchEvent {
                    change,
                    object,
                    revision,
                })
            })
            .boxed())
    }

    /// Changes to objects of `R`'s kind, typed, for caches: a deletion names only the
    /// object (the cache holds its last value), which spares etcd reading the previous
    /// value of every event.
    pub async fn watch_typed<R: Resource>(&self, from: Revision) -> Result<TypedWatchStream<R>> {
        self.watch_changes(shoal_api::kind_of::<R>(), from, decode_typed)
            .await
    }

    /// [`watch_typed`](Self::watch_typed) for any kind, untyped: for the apiserver's
    /// watch cache.
    pub async fn watch_objects(
        &self,
        kind: &KindDesc,
        from: Revision,
    ) -> Result<TypedWatchStream<DynamicObject>> {
        self.watch_changes(kind, from, decode).await
    }

    async fn watch_changes<R: Send + 'static>(
        &self,
        kind: &KindDesc,
        from: Revision,
        decode: fn(&KeyValue) -> Result<R>,
    ) -> Result<TypedWatchStream<R>> {
        let prefix = kind_prefix(kind);
        let stream = self.store.watch_without_prev(&prefix, from).await?;
        Ok(stream
            .map(move |item| {
                let ev = item?;
                let revision = ev.revision();
                Ok(match ev.event_type {
                    EventType::Put => TypedChange::Applied(decode(&ev.kv)?, revision),
                    EventType::Delete => {
                        let name = ev.kv.key.strip_prefix(&prefix).unwrap_or(&ev.kv.key);
                        TypedChange::Deleted(name.to_string(), revision)
                    }
                })
            })
            .boxed())
    }

    /// Typed helpers for controllers.
    pub async fn get_typed<R: Resource>(&self, name: &str) -> Result<Option<R>> {
        let kind = shoal_api::kind_of::<R>();
        match self.get(kind, name).await? {
            Some(obj) => obj.to_typed().map(Some).map_err(|e| ObjectError::Corrupt {
                key: object_key(kind, name),
                why: e.to_string(),
            }),
            None => Ok(None),
        }
    }
}

/// The next stored state when `incoming` replaces `current`'s user-owned fields and
/// its status (none in `incoming`: none stored).
fn merge_with_status(current: &DynamicObject, incoming: DynamicObject) -> DynamicObject {
    let status = incoming.body.get("status").cloned();
    let mut merged = merge_user_fields(current, incoming);
    match status {
        Some(s) => merged.body.insert("status".into(), s),
        None => merged.body.remove("status"),
    };
    merged
}

/// The next stored state when `incoming` replaces `current`'s user-owned fields.
fn merge_user_fields(current: &DynamicObject, incoming: DynamicObject) -> DynamicObject {
    let mut next = current.clone();
    let status = next.body.remove("status");
    next.body = incoming.user_body();
    if let Some(status) = status {
        next.body.insert("status".into(), status);
    }
    next.metadata.labels = incoming.metadata.labels;
    next.metadata.annotations = incoming.metadata.annotations;
    next.metadata.finalizers = incoming.metadata.finalizers;
    next.metadata.owner_references = incoming.metadata.owner_references;
    if next.user_body() != current.user_body() {
        next.metadata.generation = Some(current.metadata.generation.unwrap_or(0) + 1);
    }
    next
}
