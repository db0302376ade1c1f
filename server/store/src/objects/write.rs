//! Writes of objects: create, update, delete, rename and the read-modify-write
//! of [`ObjectStore::modify`]. Every write compares on the revision it read; every
//! retry after a lost race goes through [`Tries`].

use chrono::Utc;
use serde_json::Value;
use shoal_api::{DynamicObject, KindDesc, Resource};

use super::codec::{desc_of, encode, encode_typed, parse_rv, typed};
use super::keys::object_key;
use super::retry::Tries;
use super::rules::{
    is_released, keep_stored_body, merge_user_fields, merge_with_status, stamp_new,
};
use super::{ObjectError, ObjectStore, Result};
use crate::{LeaseId, Revision, StoreError};

/// What `delete` did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    Deleted(DynamicObject),
    /// Finalizers remain: the object is marked and waits for its controllers.
    Pending(DynamicObject),
}

impl ObjectStore {
    /// Creates a new object, setting uid, generation and creationTimestamp.
    pub async fn create(
        &self,
        obj: DynamicObject,
        lease: Option<LeaseId>,
    ) -> Result<DynamicObject> {
        let kind = desc_of(&obj)?;
        let mut obj = obj;
        stamp_new(&mut obj.metadata);
        let rev = self
            .store
            .create(&object_key(kind, obj.name()), encode(&obj)?, lease)
            .await
            .map_err(|e| self.map_err(e, &obj.kind, &obj.metadata.name))?;
        obj.metadata.resource_version = Some(rev.to_string());
        Ok(obj)
    }

    /// Replaces the user-owned parts of the object, keeping status and server-set
    /// metadata. With a `resourceVersion`, only at that revision (else `Conflict`);
    /// without one, at the latest, retried through [`Tries`] as long as others write
    /// in between. Removing the last finalizer of an object being deleted deletes it.
    pub async fn update(
        &self,
        obj: DynamicObject,
        lease: Option<LeaseId>,
    ) -> Result<DynamicObject> {
        let kind = desc_of(&obj)?;
        let name = obj.name().to_string();
        let precondition = parse_rv(&obj)?;
        let mut tries = Tries::new(kind.kind, &name);
        loop {
            tries.begin().await?;
            let current = self.get_existing(kind, &name).await?;
            let expected = match precondition {
                Some(rv) => rv,
                None => parse_rv(&current)?.unwrap_or(0),
            };
            let merged = merge_user_fields(&current, obj.clone());
            match self.write(kind, merged, expected, lease).await {
                Err(ObjectError::Conflict { current, .. }) if precondition.is_none() => {
                    tries.lost(current)
                }
                other => return other,
            }
        }
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

    pub(super) async fn write(
        &self,
        kind: &KindDesc,
        mut obj: DynamicObject,
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> Result<DynamicObject> {
        let key = object_key(kind, obj.name());
        if is_released(&obj) {
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

    /// Deletes, or marks for deletion when finalizers remain.
    pub async fn delete(&self, kind: &KindDesc, name: &str) -> Result<DeleteOutcome> {
        let mut tries = Tries::new(kind.kind, name);
        loop {
            tries.begin().await?;
            let current = self.get_existing(kind, name).await?;
            let rv = parse_rv(&current)?.unwrap_or(0);
            let key = object_key(kind, name);
            let lost = if current.metadata.finalizers.is_empty() {
                match self.store.delete(&key, Some(rv)).await {
                    Ok(_) => return Ok(DeleteOutcome::Deleted(current)),
                    Err(StoreError::Conflict { current, .. }) => current,
                    Err(e) => return Err(self.map_err(e, kind.kind, name)),
                }
            } else {
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
                    Err(StoreError::Conflict { current, .. }) => current,
                    Err(e) => return Err(self.map_err(e, kind.kind, name)),
                }
            };
            tries.lost(lost);
        }
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
        let key = || object_key(kind, name);
        let to_dynamic =
            |t: &R| DynamicObject::from_typed(t).map_err(|e| ObjectError::Invalid(e.to_string()));
        let mut tries = Tries::new(kind.kind, name);
        loop {
            tries.begin().await?;
            let current = self.get_existing(kind, name).await?;
            let rv = parse_rv(&current)?.unwrap_or(0);
            let mut typed_obj: R = typed(&current, key)?;
            let before = to_dynamic(&typed_obj)?;
            if !f(&mut typed_obj)? {
                return Ok(None);
            }
            let mut next = to_dynamic(&typed_obj)?;
            keep_stored_body(&current, &before, &mut next);
            match self
                .write(kind, merge_with_status(&current, next), rv, None)
                .await
            {
                Ok(written) => return typed(&written, key).map(Some),
                Err(ObjectError::Conflict { current, .. }) => tries.lost(current),
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates `name` as `create` makes it from nothing, or changes it as `change` does
    /// when it exists; the write carries `lease` (the object goes when the lease does).
    /// Lost races (someone created or changed it meanwhile) read again. For records that
    /// many writers bump, such as Events.
    pub async fn upsert<R: Resource>(
        &self,
        name: &str,
        lease: Option<LeaseId>,
        create: impl Fn() -> R,
        mut change: impl FnMut(&mut R),
    ) -> Result<R> {
        let kind = shoal_api::kind_of::<R>();
        let mut tries = Tries::new(kind.kind, name);
        loop {
            tries.begin().await?;
            let key = object_key(kind, name);
            let written = match self.store.get(&key).await? {
                None => {
                    let mut obj = create();
                    stamp_new(obj.metadata_mut());
                    match self
                        .store
                        .create(&key, encode_typed(&mut obj)?, lease)
                        .await
                    {
                        Ok(rev) => Ok((obj, rev)),
                        Err(StoreError::AlreadyExists { .. }) => continue,
                        Err(e) => Err(e),
                    }
                }
                Some(kv) => {
                    let mut obj: R = super::codec::decode_typed(&kv)?;
                    change(&mut obj);
                    let value = encode_typed(&mut obj)?;
                    match self.store.update(&key, value, kv.mod_revision, lease).await {
                        Ok(rev) => Ok((obj, rev)),
                        Err(StoreError::Conflict { current, .. }) => {
                            tries.lost(current);
                            continue;
                        }
                        Err(StoreError::NotFound { .. }) => continue,
                        Err(e) => Err(e),
                    }
                }
            };
            let (mut obj, rev) = written.map_err(|e| self.map_err(e, kind.kind, name))?;
            obj.metadata_mut().resource_version = Some(rev.to_string());
            return Ok(obj);
        }
    }
}
