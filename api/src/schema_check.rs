//! Checks a JSON value against a kind's generated JSON Schema and reports *every*
//! structural problem (unknown fields, wrong types, bad enum values, missing fields),
//! where serde would stop at the first. Only the schema features schemars emits for
//! our types are interpreted; anything else is accepted here and left to serde.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::validate::{join_index, join_key, Problems};

/// The schema of `kind` as JSON, generated once.
pub fn cached_schema(kind: &'static str, make: fn() -> schemars::Schema) -> Arc<Value> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<Value>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(kind)
        .or_insert_with(|| Arc::new(serde_json::to_value(make()).unwrap_or(Value::Bool(true))))
        .clone()
}

pub fn check(schema: &Value, value: &Value, problems: &mut Problems) {
    Checker { root: schema }.check(schema, value, "", problems, 0);
}

struct Checker<'a> {
    root: &'a Value,
}

/// How a value reads in a message: `"three"`, `5`, `a mapping`.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Object(_) => "a mapping".into(),
        Value::Array(_) => "a list".into(),
        other => other.to_string(),
    }
}

/// Strings of our own formats (durations, sizes) are checked by their parsers here, so
/// a bad one is reported with its path like any other problem, also inside the fields
/// serde reads through `flatten` (where it cannot say the path).
fn check_format(format: &str, text: &str) -> Result<(), String> {
    match format {
        crate::quantity::DURATION_FORMAT => text.parse::<crate::quantity::Duration>().map(drop),
        crate::quantity::BYTE_SIZE_FORMAT => text.parse::<crate::quantity::ByteSize>().map(drop),
        _ => Ok(()),
    }
}

fn type_word(t: &str) -> &'static str {
    match t {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "true or false",
        "object" => "a mapping",
        "array" => "a list",
        "null" => "null",
        _ => "a value",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => true,
    }
}

impl<'a> Checker<'a> {
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/$defs/")
                .and_then(|name| self.root.get("$defs").and_then(|d| d.get(name)))
                .unwrap_or(&Value::Bool(true)),
            None => schema,
        }
    }

    fn check(&self, schema: &'a Value, v: &Value, path: &str, out: &mut Problems, depth: usize) {
        if depth > 64 {
            return;
        }
        let schema = self.resolve(schema);
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            let mut first_errors = None;
            for b in branches {
                let mut p = Problems::default();
                self.check(b, v, path, &mut p, depth + 1);
                if p.is_empty() {
                    return;
                }
                let is_null_branch =
                    self.resolve(b).get("type").and_then(Value::as_str) == Some("null");
                if first_errors.is_none() && !is_null_branch {
                    first_errors = Some(p);
                }
            }
            // An enum whose variants carry docs is one branch per variant: name them all.
            let words: Option<Vec<String>> = branches
                .iter()
                .map(|b| self.resolve(b))
                .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                .map(|b| match (b.get("const"), b.get("enum")) {
                    (Some(Value::String(c)), _) => Some(vec![c.clone()]),
                    (_, Some(Value::Array(e))) => {
                        e.iter().map(|o| o.as_str().map(str::to_string)).collect()
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(|lists| lists.concat());
            match (words, first_errors) {
                (Some(words), _) if words.len() > 1 => out.push(
                    path,
                    format!(
                        "expected one of {}, found {}",
                        words.join(", "),
                        describe(v)
                    ),
                ),
                (_, Some(p)) => out.0.extend(p.0),
                _ => {}
            }
            return;
        }
        if let Some(c) = schema.get("const") {
            if c != v {
                out.push(path, format!("expected {c}, found {}", describe(v)));
            }
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(v) {
                let list: Vec<String> = options
                    .iter()
                    .map(|o| o.as_str().map_or(o.to_string(), str::to_string))
                    .collect();
                out.push(
                    path,
                    format!("expected one of {}, found {}", list.join(", "), describe(v)),
                );
            }
            return;
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(v, t)) {
            let want = types
                .iter()
                .find(|t| **t != "null")
                .copied()
                .unwrap_or(types[0]);
            out.push(
                path,
                format!("expected {}, found {}", type_word(want), describe(v)),
            );
            return;
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    out.push(path, format!("must be at least {min}"));
                }
            }
            if schema.get("format").and_then(Value::as_str) == Some("uint32")
                && n > f64::from(u32::MAX)
            {
                out.push(path, format!("must be at most {}", u32::MAX));
            }
        }
        if let (Some(text), Some(format)) = (v.as_str(), schema.get("format")) {
            if let Err(why) = check_format(format.as_str().unwrap_or(""), text) {
                out.push(path, why);
            }
        }
        match v {
            Value::Object(map) => self.check_object(schema, map, path, out, depth),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &join_index(path, i), out, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }

    fn check_object(
        &self,
        schema: &'a Value,
        map: &serde_json::Map<String, Value>,
        path: &str,
        out: &mut Problems,
        depth: usize,
    ) {
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (k, val) in map {
            let child = join_key(path, k);
            match props.and_then(|p| p.get(k)) {
                Some(s) => self.check(s, val, &child, out, depth + 1),
                None => match additional {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        let hint = if known.is_empty() {
                            "this object takes no fields".to_string()
                        } else {
                            format!("known fields: {}", known.join(", "))
                        };
                        out.push(child, format!("unknown field ({hint})"));
                    }
                    Some(s @ Value::Object(_)) => self.check(s, val, &child, out, depth + 1),
                    _ => {}
                },
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    out.push(join_key(path, r), "required field is missing");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Resource;
    use serde_json::json;

    fn problems(v: Value) -> Vec<String> {
        let schema = cached_schema(crate::Service::KIND, || {
            schemars::schema_for!(crate::Service)
        });
        let mut p = Problems::default();
        check(&schema, &v, &mut p);
        p.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reports_every_problem() {
        let p = problems(json!({
            "apiVersion": "shoal.dev/v1", "kind": "Service", "metadata": {"name": "x", "labelz": {}},
            "spec": {"image": 5, "replicas": "three", "portz": [1], "env": {"A": 1}}
        }));
        assert!(
            p.contains(&"spec.replicas: expected an integer, found \"three\"".to_string()),
            "{p:?}"
        );
        assert!(
            p.iter().any(|e| e.starts_with("spec.portz: unknown field")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|e| e.starts_with("metadata.labelz: unknown field")),
            "{p:?}"
        );
        assert!(
            p.contains(&"spec.image: expected a string, found 5".to_string()),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|e| e.starts_with("spec.env.A: expected a string")),
            "{p:?}"
        );
        assert_eq!(p.len(), 5, "{p:?}");
    }

    #[test]
    fn valid_is_quiet() {
        let p = problems(json!({
            "apiVersion": "shoal.dev/v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"image": "a", "replicas": 2}
        }));
        assert!(p.is_empty(), "{p:?}");
        let p = problems(
            json!({"apiVersion": "v2", "kind": "Service", "metadata": {"name": "x"}, "spec": {"replicas": -1}}),
        );
        assert!(
            p.iter()
                .any(|e| e.starts_with("apiVersion: expected one of shoal.dev/v1")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|e| e.starts_with("spec.replicas: must be at least 0")),
            "{p:?}"
        );
    }
}
