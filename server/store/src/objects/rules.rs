//! The metadata rules every write follows: what the server sets, what the user owns,
//! and when the generation moves.

use chrono::Utc;
use shoal_api::DynamicObject;

/// The server-set metadata of a new object.
pub(crate) fn stamp_new(meta: &mut shoal_api::ObjectMeta) {
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.generation = Some(1);
    meta.creation_timestamp = Some(Utc::now());
    meta.deletion_timestamp = None;
    meta.resource_version = None;
}

/// An object being deleted whose last finalizer is gone: writing it deletes it.
pub(crate) fn is_released(obj: &DynamicObject) -> bool {
    obj.metadata.deletion_timestamp.is_some() && obj.metadata.finalizers.is_empty()
}

/// Finalizers under `shoal.dev/` are the controllers' (the network controller's holds a
/// Network until its addresses are released): a manifest neither sets nor drops them.
fn is_system_finalizer(f: &str) -> bool {
    f.starts_with("shoal.dev/")
}

fn user_finalizers(obj: &DynamicObject) -> impl Iterator<Item = &String> {
    obj.metadata
        .finalizers
        .iter()
        .filter(|f| !is_system_finalizer(f))
}

/// Whether two objects differ in anything the user owns.
pub fn user_fields_equal(a: &DynamicObject, b: &DynamicObject) -> bool {
    a.user_body() == b.user_body()
        && a.metadata.labels == b.metadata.labels
        && a.metadata.annotations == b.metadata.annotations
        && user_finalizers(a).eq(user_finalizers(b))
        && a.metadata.owner_references == b.metadata.owner_references
}

/// Keeps `current`'s user-owned body, as stored, in `next` when a change left it as it
/// was: `before` and `next` are both as decoded, and decoding writes defaults out
/// (`driver: bridge`), so only a change the writer made is a new spec (and a new
/// generation). `next`'s status stays.
pub(crate) fn keep_stored_body(
    current: &DynamicObject,
    before: &DynamicObject,
    next: &mut DynamicObject,
) {
    if next.user_body() == before.user_body() {
        let status = next.body.remove("status");
        next.body = current.user_body();
        next.body.extend(status.map(|s| ("status".to_string(), s)));
    }
}

/// The next stored state when `incoming` replaces `current`'s user-owned fields and
/// its status (none in `incoming`: none stored).
pub(crate) fn merge_with_status(current: &DynamicObject, incoming: DynamicObject) -> DynamicObject {
    let status = incoming.body.get("status").cloned();
    // The server's own writers (controllers) set system finalizers as well.
    let finalizers = incoming.metadata.finalizers.clone();
    let mut merged = merge_user_fields(current, incoming);
    merged.metadata.finalizers = finalizers;
    match status {
        Some(s) => merged.body.insert("status".into(), s),
        None => merged.body.remove("status"),
    };
    merged
}

/// The next stored state when `incoming` replaces `current`'s user-owned fields.
pub(crate) fn merge_user_fields(current: &DynamicObject, incoming: DynamicObject) -> DynamicObject {
    let mut next = current.clone();
    let status = next.body.remove("status");
    next.body = incoming.user_body();
    if let Some(status) = status {
        next.body.insert("status".into(), status);
    }
    // The controllers' finalizers stay; the user's are the manifest's.
    let system = current
        .metadata
        .finalizers
        .iter()
        .filter(|f| is_system_finalizer(f))
        .cloned();
    let finalizers = system.chain(user_finalizers(&incoming).cloned()).collect();
    next.metadata.finalizers = finalizers;
    next.metadata.labels = incoming.metadata.labels;
    next.metadata.annotations = incoming.metadata.annotations;
    next.metadata.owner_references = incoming.metadata.owner_references;
    if next.user_body() != current.user_body() {
        next.metadata.generation = Some(current.metadata.generation.unwrap_or(0) + 1);
    }
    next
}
