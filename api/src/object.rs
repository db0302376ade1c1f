//! The generic side of objects: the `Resource` trait every kind implements, the untyped
//! `DynamicObject` the store and API server move around, and the kind registry.

use std::fmt::Debug;

use schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::kinds::{Config, Event, GitSync, LogPipeline, Network, Node, Secret, Service, Task};
use crate::meta::ObjectMeta;
use crate::validate::{join_index, join_key, Problems, Validate};

/// A stored kind.
pub trait Resource:
    Serialize + DeserializeOwned + JsonSchema + Clone + Debug + Send + Sync + Validate + 'static
{
    const KIND: &'static str;
    const PLURAL: &'static str;
    const SHORT: &'static [&'static str];
    /// Whether users may apply it (Events are written by controllers only).
    const USER_WRITABLE: bool = true;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    fn name(&self) -> &str {
        &self.metadata().name
    }
}

/// Any object, with its kind-specific fields (`spec`, `status`, or Event's own) kept
/// as JSON. This is the form that crosses the wire and lands in the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DynamicObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

impl DynamicObject {
    pub fn from_typed<R: Resource>(obj: &R) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(obj)?)
    }

    pub fn to_typed<R: Resource>(&self) -> Result<R, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(self)?)
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// `Kind/name`, as events and messages name objects.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind, self.metadata.name)
    }

    /// Everything the user owns: the body without `status`.
    pub fn user_body(&self) -> Map<String, Value> {
        let mut body = self.body.clone();
        body.remove("status");
        body
    }

    pub fn kind_desc(&self) -> Option<&'static KindDesc> {
        KINDS.iter().find(|k| k.kind == self.kind)
    }
}

/// What the system knows about a kind without knowing its type.
pub struct KindDesc {
    pub kind: &'static str,
    pub plural: &'static str,
    pub short: &'static [&'static str],
    pub user_writable: bool,
    /// Checks a JSON document as this kind (types, unknown fields, rules) and returns
    /// it normalized, with defaults filled in, or every problem found.
    pub decode: fn(Value) -> Result<DynamicObject, Problems>,
    pub schema: fn() -> Schema,
}

impl Debug for KindDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind)
    }
}

const fn desc<R: Resource>() -> KindDesc {
    KindDesc {
        kind: R::KIND,
        plural: R::PLURAL,
        short: R::SHORT,
        user_writable: R::USER_WRITABLE,
        decode: decode_as::<R>,
        schema: || schemars::schema_for!(R),
    }
}

/// Every kind, in the order `shoal get all` would list them.
pub static KINDS: [KindDesc; 9] = [
    desc::<Service>(),
    desc::<Task>(),
    desc::<Network>(),
    desc::<Node>(),
    desc::<GitSync>(),
    desc::<LogPipeline>(),
    desc::<Secret>(),
    desc::<Config>(),
    desc::<Event>(),
];

/// The registry entry of a typed kind. Every `Resource` is in `KINDS` (a test checks),
/// so this cannot fail at run time.
pub fn kind_of<R: Resource>() -> &'static KindDesc {
    KINDS
        .iter()
        .find(|k| k.kind == R::KIND)
        .unwrap_or_else(|| panic!("{} is missing from api::KINDS", R::KIND))
}

/// Finds a kind by the names a CLI user types: `Service`, `service`, `services`, `svc`.
pub fn kind_by_name(name: &str) -> Option<&'static KindDesc> {
    let lower = name.to_ascii_lowercase();
    KINDS.iter().find(|k| {
        k.kind.to_ascii_lowercase() == lower || k.plural == lower || k.short.contains(&&*lower)
    })
}

pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
}

fn decode_as<R: Resource>(value: Value) -> Result<DynamicObject, Problems> {
    let mut problems = Problems::default();
    // The schema pass finds every structural problem; serde below would stop at one.
    let schema = crate::schema_check::cached_schema(R::KIND, || schemars::schema_for!(R));
    crate::schema_check::check(&schema, &value, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let typed: R = match serde_path_to_error::deserialize(value) {
        Ok(t) => t,
        Err(e) => {
            let path = path_string(e.path());
            let (path, message) = friendly(&path, &e.into_inner().to_string());
            problems.push(path, message);
            return Err(problems);
        }
    };
    typed.validate(&mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    DynamicObject::from_typed(&typed).map_err(|e| {
        let mut p = Problems::default();
        p.push("", format!("cannot normalize object: {e}"));
        p
    })
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path {
        out = match seg {
            Segment::Seq { index } => join_index(&out, *index),
            Segment::Map { key } => join_key(&out, key),
            Segment::Enum { variant } => join_key(&out, variant),
            Segment::Unknown => out,
        };
    }
    out
}

/// Turns serde's wording into the manifest's: `invalid type: string "three", expected
/// u32` becomes `expected an integer, found "three"`; unknown and missing fields get
/// the field into the path.
fn friendly(path: &str, raw: &str) -> (String, String) {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let expected = expected
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected ")
                .replace('`', "");
            let hint = if expected.starts_with(", there are no fields") || expected.is_empty() {
                "this object takes no fields".to_string()
            } else {
                format!("known fields: {expected}")
            };
            // serde_path_to_error already names the field in the path; older versions don't.
            let full = if path == field || path.ends_with(&format!(".{field}")) {
                path.to_string()
            } else {
                join_key(path, field)
            };
            return (full, format!("unknown field ({hint})"));
        }
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return (join_key(path, field), "required field is missing".into());
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        if let Some((found, expected)) = rest.split_once('`') {
            let expected = expected
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected ")
                .replace('`', "");
            return (
                path.to_string(),
                format!("expected one of {expected}, found {found:?}"),
            );
        }
    }
    if let Some(rest) = raw
        .strip_prefix("invalid type: ")
        .or_else(|| raw.strip_prefix("invalid value: "))
    {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            return (
                path.to_string(),
                format!(
                    "expected {}, found {}",
                    expected_word(expected),
                    found_word(found)
                ),
            );
        }
    }
    (path.to_string(), raw.to_string())
}

fn expected_word(e: &str) -> String {
    match e {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "an integer".into()
        }
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        "a string" => "a string".into(),
        s if s.starts_with("struct ") => "a mapping".into(),
        s => s.into(),
    }
}

fn found_word(f: &str) -> String {
    if let Some(s) = f.strip_prefix("string ") {
        return s.to_string();
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = f.strip_prefix(prefix) {
            return v.trim_matches('`').to_string();
        }
    }
    match f {
        "map" => "a mapping".into(),
        "sequence" => "a list".into(),
        "unit value" | "null" => "null".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered() {
        for kind in [
            kind_of::<Service>(),
            kind_of::<Task>(),
            kind_of::<Network>(),
            kind_of::<Node>(),
            kind_of::<GitSync>(),
            kind_of::<LogPipeline>(),
            kind_of::<Secret>(),
            kind_of::<Config>(),
            kind_of::<Event>(),
        ] {
            assert!(kind_by_name(kind.kind).is_some());
        }
    }

    #[test]
    fn kind_lookup() {
        assert_eq!(kind_by_name("svc").map(|k| k.kind), Some("Service"));
        assert_eq!(kind_by_name("Services").map(|k| k.kind), Some("Service"));
        assert_eq!(kind_by_name("gitsync").map(|k| k.kind), Some("GitSync"));
        assert!(kind_by_name("deployment").is_none());
    }

    #[test]
    fn friendly_messages() {
        assert_eq!(
            friendly(
                "spec.replicas",
                "invalid type: string \"three\", expected u32"
            ),
            (
                "spec.replicas".into(),
                "expected an integer, found \"three\"".into()
            )
        );
        let (path, msg) = friendly(
            "spec.replica",
            "unknown field `replica`, expected one of `image`, `replicas`",
        );
        assert_eq!(path, "spec.replica");
        assert!(msg.contains("image, replicas"), "{msg}");
    }
}
