use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{define_kind, require};
use crate::meta::{Condition, Timestamp};
use crate::quantity::Duration;
use crate::validate::{Problems, Validate};

define_kind! {
    /// Keeps the cluster equal to the manifests under `path` at `ref` of a git repository.
    GitSync {
        kind: "GitSync",
        plural: "gitsyncs",
        short: ["gs"],
        spec: GitSyncSpec,
        status: GitSyncStatus,
        dotted_names: false,
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSyncSpec {
    /// file://, git://, http(s):// or ssh:// (also `user@host:path`).
    #[serde(default)]
    pub url: String,
    /// Branch, tag or commit id.
    #[serde(default = "main", rename = "ref")]
    pub ref_: String,
    /// Folder inside the repository holding the manifests; the root when empty.
    #[serde(default)]
    pub path: String,
    #[serde(default = "one_minute")]
    pub interval: Duration,
    /// Delete objects that were removed from git.
    #[serde(default = "yes")]
    pub prune: bool,
    #[serde(default)]
    pub suspend: bool,
}

impl Default for GitSyncSpec {
    fn default() -> Self {
        GitSyncSpec {
            url: String::new(),
            ref_: main(),
            path: String::new(),
            interval: one_minute(),
            prune: true,
            suspend: false,
        }
    }
}

fn main() -> String {
    "main".into()
}
fn one_minute() -> Duration {
    Duration::from_secs(60)
}
fn yes() -> bool {
    true
}

impl Validate for GitSyncSpec {
    fn validate(&self, p: &mut Problems) {
        require(p, "spec.url", &self.url);
        let url = self.url.as_str();
        let scheme_ok = ["file://", "git://", "http://", "https://", "ssh://"]
            .iter()
            .any(|s| url.starts_with(s))
            || (url.contains('@') && url.contains(':') && !url.contains("://"));
        if !url.is_empty() && !scheme_ok {
            p.push(
                "spec.url",
                format!("{url:?}: use file://, git://, http(s)://, ssh:// or user@host:path"),
            );
        }
        require(p, "spec.ref", &self.ref_);
        if self.path.split('/').any(|part| part == "..") || self.path.starts_with('/') {
            p.push("spec.path", "must be a relative path inside the repository");
        }
        if self.interval.0 < std::time::Duration::from_secs(1) {
            p.push("spec.interval", "must be at least 1s");
        }
    }
}

/// The label a GitSync puts on every object it applies: `shoal.dev/gitsync: <name>`.
pub const GITSYNC_LABEL: &str = crate::labels::GITSYNC;
/// Set (to any new value, a time by convention) to ask for a sync now rather than at the
/// next interval; `shoal gitsync sync` and the webhook write it.
pub const SYNC_REQUEST_ANNOTATION: &str = crate::labels::SYNC_REQUESTED;
/// `shoal.dev/reconcile: disabled` on a live object: its GitSync leaves it alone (no drift
/// correction, no prune).
pub const RECONCILE_ANNOTATION: &str = crate::labels::RECONCILE;

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub kind: String,
    pub name: String,
    /// A digest of what was applied, to tell a hand edit (drift) from a change in git.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

/// One sync attempt, newest first in `status.history`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// `Applied` or `Failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitSyncStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Timestamp>,
    /// The `shoal.dev/sync-requested` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sync_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SyncRecord>,
}
