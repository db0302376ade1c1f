//! Patches: part of an object's user-owned fields changed by a JSON merge patch
//! (RFC 7396) at the current revision, so a client changing one field (`scale`,
//! `node drain`, `gitsync suspend`) needs no read-modify-write loop of its own.

use serde_json::Value;
use shoal_api::{DynamicObject, KindDesc};

use super::codec::parse_rv;
use super::retry::Tries;
use super::rules::{keep_stored_body, merge_user_fields, user_fields_equal};
use super::{ObjectError, ObjectStore, Result};

impl ObjectStore {
    /// Applies `patch` to `kind/name` as it is now, validates the result as its kind
    /// and writes it at the revision it read (a lost race patches the newer object).
    /// A patch that changes nothing writes nothing and returns the object as stored.
    pub async fn patch(&self, kind: &KindDesc, name: &str, patch: &Value) -> Result<DynamicObject> {
        check_patch(patch)?;
        let mut tries = Tries::new(kind.kind, name);
        loop {
            tries.begin().await?;
            let current = self.get_existing(kind, name).await?;
            let rv = parse_rv(&current)?.unwrap_or(0);
            let next = patched(&current, patch)?;
            if user_fields_equal(&current, &next) {
                return Ok(current);
            }
            match self
                .write(kind, merge_user_fields(&current, next), rv, None)
                .await
            {
                Ok(written) => return Ok(written),
                Err(ObjectError::Conflict { current, .. }) => tries.lost(current),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Refuses what a patch may not touch: the status is the system's, and what names
/// the object stays what it is.
fn check_patch(patch: &Value) -> Result<()> {
    let invalid = |m: &str| Err(ObjectError::Invalid(m.into()));
    let Some(fields) = patch.as_object() else {
        return invalid("a merge patch must be a JSON object");
    };
    for (field, why) in [
        ("status", "status is written by the system, not patched"),
        ("apiVersion", "apiVersion cannot be patched"),
        ("kind", "kind cannot be patched"),
    ] {
        if fields.contains_key(field) {
            return invalid(why);
        }
    }
    if let Some(meta) = fields.get("metadata") {
        let Some(meta) = meta.as_object() else {
            return invalid("metadata: must be an object");
        };
        if meta.contains_key("name") {
            return invalid("metadata.name cannot be patched; `shoal rename` renames a task");
        }
    }
    Ok(())
}

/// `current` with `patch` merged into its user-owned fields, checked as a manifest of
/// its kind would be.
fn patched(current: &DynamicObject, patch: &Value) -> Result<DynamicObject> {
    let mut doc = serde_json::to_value(current).map_err(|e| ObjectError::Invalid(e.to_string()))?;
    if let Some(map) = doc.as_object_mut() {
        map.remove("status");
    }
    let before = checked(doc.clone())?;
    json_patch::merge(&mut doc, patch);
    let mut next = checked(doc)?;
    keep_stored_body(current, &before, &mut next);
    Ok(next)
}

fn checked(doc: Value) -> Result<DynamicObject> {
    shoal_api::yaml::decode_value(doc).map_err(|problems| {
        ObjectError::Invalid(shoal_api::yaml::problem_lines(problems).join("\n"))
    })
}
