//! JSON Schemas for editors (yaml-language-server) and for documentation.
//!
//! `manifests/schemas/<kind>.json` per kind plus `all.json`, which accepts any kind
//! by its `kind` field. A test in this crate fails when the checked-in files are stale;
//! `cargo run -p shoal-api --example gen-schemas` rewrites them.

use serde_json::{json, Value};

use crate::object::KINDS;

/// (file name, pretty JSON) for every schema file.
pub fn schema_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut one_of = Vec::new();
    for desc in KINDS.iter().filter(|d| d.user_writable) {
        let schema = (desc.schema)();
        let file = format!("{}.json", desc.kind.to_ascii_lowercase());
        one_of.push(json!({
            "if": {"properties": {"kind": {"const": desc.kind}}},
            "then": {"$ref": file.clone()}
        }));
        files.push((
            file,
            pretty(&serde_json::to_value(&schema).unwrap_or(Value::Null)),
        ));
    }
    let all = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "shoal manifest",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"const": crate::meta::API_VERSION},
            "kind": {"enum": KINDS.iter().filter(|d| d.user_writable).map(|d| d.kind).collect::<Vec<_>>()}
        },
        "allOf": one_of
    });
    files.push(("all.json".into(), pretty(&all)));
    files
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The checked-in schemas must equal what the code generates.
    #[test]
    fn checked_in_schemas_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/schemas");
        let mut stale = Vec::new();
        for (name, text) in schema_files() {
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            if on_disk != text {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "stale schemas {stale:?}: run `cargo run -p shoal-api --example gen-schemas`"
        );
    }

    #[test]
    fn schema_rejects_unknown_fields() {
        let files = schema_files();
        let (_, svc) = files
            .iter()
            .find(|(n, _)| n == "service.json")
            .expect("service schema");
        let v: Value = serde_json::from_str(svc).expect("json");
        assert_eq!(v["additionalProperties"], Value::Bool(false), "{svc}");
    }
}
