//! Where objects live in the key space.
//!
//! Keys are `/shoal/<plural>/<name>`; heartbeats are `/shoal/heartbeats/<node>`.

use shoal_api::KindDesc;

pub const ROOT: &str = "/shoal/";

/// `<HEARTBEAT_PREFIX><node>` exists while the node's heartbeat lease is alive.
pub const HEARTBEAT_PREFIX: &str = "/shoal/heartbeats/";

pub fn kind_prefix(kind: &KindDesc) -> String {
    format!("{ROOT}{}/", kind.plural)
}

pub fn object_key(kind: &KindDesc, name: &str) -> String {
    format!("{ROOT}{}/{name}", kind.plural)
}

/// The name part of a key under `prefix`.
pub(crate) fn name_in<'k>(key: &'k str, prefix: &str) -> &'k str {
    key.strip_prefix(prefix).unwrap_or(key)
}
