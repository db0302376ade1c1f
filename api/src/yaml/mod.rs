//! Everything YAML. This is the only module that names a YAML library, so replacing
//! one (serde_yaml is unmaintained; a fork can stand in) is a change here alone.

mod load;

use std::fmt;

use serde::Serialize;
use serde_json::Value;

pub use load::{load_all, LoadError, LoadedDoc, Position, MAX_INPUT_BYTES};

use crate::meta::API_VERSION;
use crate::object::{kind_by_name, kind_names, DynamicObject, KINDS};

/// One problem in one manifest, with everything a user needs to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub doc: usize,
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: doc {}, line {}: ", self.file, self.doc, self.line)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{} (column {})", self.message, self.column)
    }
}

/// A manifest that passed every check, normalized (defaults filled in).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: String,
    pub doc: usize,
    pub line: usize,
    pub object: DynamicObject,
}

/// Decodes and checks every document in `text`. Either all documents are good, or every
/// problem found in any of them is returned: the caller writes nothing in that case.
pub fn decode_manifests(file: &str, text: &str) -> Result<Vec<Manifest>, Vec<Diagnostic>> {
    // Editors on Windows start files with a byte order mark; YAML allows one there.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let docs = load_all(text).map_err(|e| {
        vec![Diagnostic {
            file: file.to_string(),
            doc: e.doc.max(1),
            line: e.position.line,
            column: e.position.column,
            path: String::new(),
            message: e.message,
        }]
    })?;
    let mut manifests = Vec::new();
    let mut problems = Vec::new();
    for doc in docs {
        if doc.value.is_null() {
            continue;
        }
        match decode_doc(&doc) {
            Ok(object) => manifests.push(Manifest {
                file: file.to_string(),
                doc: doc.index,
                line: doc.start.line,
                object,
            }),
            Err(list) => problems.extend(list.into_iter().map(|(path, message)| {
                let pos = doc.position_of(&path);
                Diagnostic {
                    file: file.to_string(),
                    doc: doc.index,
                    line: pos.line,
                    column: pos.column,
                    path,
                    message,
                }
            })),
        }
    }
    if problems.is_empty() {
        Ok(manifests)
    } else {
        Err(problems)
    }
}

/// The problems `decode_value` found, one line each: `path: message` (the message alone
/// for the object as a whole).
pub fn problem_lines(problems: Vec<(String, String)>) -> Vec<String> {
    problems
        .into_iter()
        .map(|(path, msg)| {
            if path.is_empty() {
                msg
            } else {
                format!("{path}: {msg}")
            }
        })
        .collect()
}

/// Checks a JSON value as an object of the kind it names.
pub fn decode_value(value: Value) -> Result<DynamicObject, Vec<(String, String)>> {
    let doc = LoadedDoc {
        index: 1,
        start: Position::default(),
        value,
        positions: Default::default(),
    };
    decode_doc(&doc)
}

fn decode_doc(doc: &LoadedDoc) -> Result<DynamicObject, Vec<(String, String)>> {
    let one = |path: &str, msg: String| Err(vec![(path.to_string(), msg)]);
    let Some(map) = doc.value.as_object() else {
        return one(
            "",
            "a manifest must be a mapping with apiVersion, kind, metadata and spec".into(),
        );
    };
    match map.get("apiVersion") {
        None => return one("apiVersion", "required field is missing".into()),
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            return one(
                "apiVersion",
                format!("unsupported apiVersion {other}; shoal speaks {API_VERSION}"),
            )
        }
    }
    let kind = match map.get("kind") {
        None => return one("kind", "required field is missing".into()),
        Some(Value::String(k)) => k,
        Some(other) => return one("kind", format!("expected a kind name, found {other}")),
    };
    let Some(desc) = KINDS.iter().find(|d| d.kind == kind) else {
        let hint = match kind_by_name(kind) {
            Some(d) => format!("; did you mean {}?", d.kind),
            None => format!("; known kinds: {}", kind_names()),
        };
        return one("kind", format!("unknown kind {kind:?}{hint}"));
    };
    // Status is the system's: a manifest's is ignored, as Kubernetes ignores it where a
    // kind has a status subresource, so `get -o yaml` output applies as it is.
    let mut value = doc.value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    (desc.decode)(value).map_err(|p| p.0.into_iter().map(|p| (p.path, p.message)).collect())
}

/// Renders any serializable value as YAML.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, String> {
    serde_yaml::to_string(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "\
apiVersion: shoal.dev/v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  image: local/busybox:1
  replicas: 3
";

    #[test]
    fn a_manifest_status_is_ignored() {
        let text = "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {name: t}\nspec: {image: x}\n\
                    status: {state: running, containerId: forged, bogus: 1}\n";
        let m = decode_manifests("t.yaml", text).expect("status does not count");
        assert_eq!(m[0].object.body.get("status"), None);
    }

    #[test]
    fn decodes_and_normalizes() {
        let m = decode_manifests("web.yaml", GOOD).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].object.kind, "Service");
        assert_eq!(m[0].object.body["spec"]["replicas"], Value::from(3));
    }

    #[test]
    fn reports_where_it_is_broken() {
        let text = format!(
            "{GOOD}---\napiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  image: x\n  replicas: three\n"
        );
        let errs = decode_manifests("web.yaml", &text).unwrap_err();
        assert_eq!(errs.len(), 1);
        let line = errs[0].to_string();
        assert!(
            line.starts_with(
                "web.yaml: doc 2, line 13: spec.replicas: expected an integer, found \"three\""
            ),
            "{line}"
        );
    }

    #[test]
    fn every_document_is_checked() {
        let text = "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {}\n---\napiVersion: apps/v1\nkind: Deployment\n---\napiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: x}\nspec: {image: a, replica: 2}\n";
        let errs = decode_manifests("f.yaml", text).unwrap_err();
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            all.iter()
                .any(|e| e.contains("doc 1, line 3: metadata.name")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.contains("doc 1") && e.contains("spec.image: required")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|e| e.contains("doc 2, line 6: apiVersion")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.contains("doc 3, line 12: spec.replica: unknown field")),
            "{all:?}"
        );
    }

    #[test]
    fn unknown_kind_suggests() {
        let errs = decode_manifests(
            "f.yaml",
            "apiVersion: shoal.dev/v1\nkind: service\nmetadata: {name: x}\n",
        )
        .unwrap_err();
        assert!(
            errs[0].message.contains("did you mean Service"),
            "{:?}",
            errs
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "[a-zA-Z:\\-\\[\\]{}&*!|>'\" \n#0-9.,]{0,300}") {
            let _ = decode_manifests("f.yaml", &s);
            let text = format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: x}}\nspec:\n  {s}\n");
            let _ = decode_manifests("f.yaml", &text);
        }
    }
}
