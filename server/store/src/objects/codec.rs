//! Stored bytes ⇄ objects. Values are the object's JSON without `resourceVersion`,
//! which is the key's `mod_revision` and is filled in on read.

use shoal_api::{DynamicObject, KindDesc, Resource};

use super::{ObjectError, Result};
use crate::{KeyValue, Revision};

pub(crate) fn desc_of(obj: &DynamicObject) -> Result<&'static KindDesc> {
    obj.kind_desc()
        .ok_or_else(|| ObjectError::Invalid(format!("unknown kind {:?}", obj.kind)))
}

pub(crate) fn decode(kv: &KeyValue) -> Result<DynamicObject> {
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
pub(crate) fn decode_typed<R: Resource>(kv: &KeyValue) -> Result<R> {
    let mut obj: R = serde_json::from_slice(&kv.value).map_err(|e| ObjectError::Corrupt {
        key: kv.key.clone(),
        why: e.to_string(),
    })?;
    obj.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(obj)
}

/// A `DynamicObject` as its kind's type; `key` names it in the error.
pub(crate) fn typed<R: Resource>(obj: &DynamicObject, key: impl FnOnce() -> String) -> Result<R> {
    obj.to_typed().map_err(|e| ObjectError::Corrupt {
        key: key(),
        why: e.to_string(),
    })
}

pub(crate) fn encode(obj: &DynamicObject) -> Result<Vec<u8>> {
    let mut stored = obj.clone();
    stored.metadata.resource_version = None;
    let bytes = serde_json::to_vec(&stored).map_err(|e| ObjectError::Invalid(e.to_string()))?;
    within_limit(&obj.kind, obj.name(), bytes)
}

/// A typed object as stored: without `resourceVersion` (the store's revision is).
pub(crate) fn encode_typed<R: Resource>(obj: &mut R) -> Result<Vec<u8>> {
    let rv = obj.metadata_mut().resource_version.take();
    let bytes = serde_json::to_vec(obj).map_err(|e| ObjectError::Invalid(e.to_string()));
    obj.metadata_mut().resource_version = rv;
    within_limit(R::KIND, obj.name(), bytes?)
}

/// The largest object either store keeps: Kubernetes' limit, under what etcd takes in
/// one request, so both stores refuse the same objects with the same words.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

fn within_limit(kind: &str, name: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ObjectError::Invalid(format!(
            "{kind}/{name} would be {} bytes stored; the limit is {MAX_OBJECT_BYTES} bytes (1.5 MiB)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

pub(crate) fn parse_rv(obj: &DynamicObject) -> Result<Option<Revision>> {
    match &obj.metadata.resource_version {
        None => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ObjectError::Invalid(format!("metadata.resourceVersion {rv:?} is not a revision"))
        }),
    }
}
