//! Metadata, conditions and the small value types every kind shares.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// A point in time, serialized as RFC 3339 (`2026-11-26T14:49:37Z`).
pub type Timestamp = DateTime<Utc>;

/// The one API version shoal speaks today.
pub const API_VERSION: &str = "shoal.dev/v1";

/// `apiVersion`: only `shoal.dev/v1` exists.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "shoal.dev/v1")]
    V1,
}

/// Metadata common to every object. `name`, `labels`, `annotations`, `finalizers` and
/// `ownerReferences` are the user's; the rest is set by the server and ignored on apply,
/// except `resourceVersion`, which apply treats as a precondition when given.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// A DNS label: lowercase letters, digits and '-', at most 63 characters.
    /// Task names may also contain '.' (`web.1`).
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Timestamp>,
}

impl ObjectMeta {
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    /// `resourceVersion` as the store revision it is, when set and well-formed.
    pub fn revision(&self) -> Option<i64> {
        self.resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
    }

    pub(crate) fn validate(&self, p: &mut Problems, allow_dots: bool) {
        if let Err(why) = check_name(&self.name, allow_dots) {
            p.push("metadata.name", why);
        }
        for key in self.labels.keys().chain(self.annotations.keys()) {
            if let Err(why) = check_label_key(key) {
                let field = if self.labels.contains_key(key) {
                    "labels"
                } else {
                    "annotations"
                };
                p.push(format!("metadata.{field}[\"{key}\"]"), why);
            }
        }
        for (key, value) in &self.labels {
            if let Err(why) = check_label_value(value) {
                p.push(format!("metadata.labels[\"{key}\"]"), why);
            }
        }
        let annotated: usize = self
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if annotated > MAX_ANNOTATION_BYTES {
            p.push(
                "metadata.annotations",
                format!("{annotated} bytes in all; at most {MAX_ANNOTATION_BYTES} (256 KiB), as Kubernetes"),
            );
        }
    }
}

/// Kubernetes' bound on an object's annotations, keys and values together.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// Points from a dependent object (a Task) to its owner (a Service).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
}

/// One observation of an object's state, as in Kubernetes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub last_transition_time: Timestamp,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Sets `type_` in `conditions` to the given status, moving `lastTransitionTime` only
/// when the status actually changes. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status || c.reason != reason || c.message != message;
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: now,
            });
            true
        }
    }
}

/// DNS label (RFC 1123), optionally with dots (DNS subdomain) for Task names like `web.1`.
pub fn check_name(name: &str, allow_dots: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    let max = if allow_dots { 253 } else { 63 };
    if name.len() > max {
        return Err(format!("must be at most {max} characters"));
    }
    let labels: Vec<&str> = if allow_dots {
        name.split('.').collect()
    } else {
        vec![name]
    };
    for label in labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            let what = if allow_dots {
                "a DNS name"
            } else {
                "a DNS label"
            };
            return Err(format!(
                "{name:?} is not {what}: use lowercase letters, digits and '-', starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// Label keys: an optional DNS-subdomain prefix and '/', then a name of at most 63
/// characters of alphanumerics, '-', '_' and '.'.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_name(prefix, true).map_err(|_| format!("key prefix {prefix:?} is not a DNS name"))?;
    }
    if name.is_empty() || name.len() > 63 || !is_label_chars(name) {
        return Err(format!(
            "key {key:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && is_label_chars(value)) {
        Ok(())
    } else {
        Err(format!(
            "value {value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_chars(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("web", false).is_ok());
        assert!(check_name("web-1", false).is_ok());
        assert!(check_name("web.1", false).is_err());
        assert!(check_name("web.1", true).is_ok());
        assert!(check_name("Web", false).is_err());
        assert!(check_name("-web", false).is_err());
        assert!(check_name(&"a".repeat(64), false).is_err());
        assert!(check_label_key("shoal.dev/service").is_ok());
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("bad key").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_x").is_ok());
        assert!(check_label_value("-x").is_err());
    }
}
