//! Apply's check that what a Service or Task names exists: its networks, secrets and
//! configs, as Swarm refuses `service create --network` or `--secret` of an unknown
//! one: its tasks could never start.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use shoal_api::{DynamicObject, FileRef, NetworkRef};
use tonic::Status;

use super::{kind_of, status_of, ApiService};
use crate::pb;

/// The fields of a Service or Task spec this check reads.
#[derive(Deserialize, Default)]
struct NamedSpec {
    #[serde(default)]
    networks: Vec<NetworkRef>,
    #[serde(default)]
    secrets: Vec<FileRef>,
    #[serde(default)]
    configs: Vec<FileRef>,
}

impl NamedSpec {
    /// Each object named: its field path, kind and name.
    fn named(&self) -> Vec<(String, &'static str, &str)> {
        let mut named = Vec::new();
        for (i, net) in self.networks.iter().enumerate() {
            let path = match net {
                NetworkRef::Name(_) => format!("spec.networks[{i}]"),
                NetworkRef::Attachment(_) => format!("spec.networks[{i}].name"),
            };
            named.push((path, "Network", net.name()));
        }
        for (field, kind, refs) in [
            ("secrets", "Secret", &self.secrets),
            ("configs", "Config", &self.configs),
        ] {
            for (i, r) in refs.iter().enumerate() {
                named.push((format!("spec.{field}[{i}].name"), kind, r.name.as_str()));
            }
        }
        named
    }
}

/// How to make what is missing.
fn remedy(kind: &str) -> &'static str {
    match kind {
        "Secret" => "create it first with `shoal secret create`",
        "Config" => "create it first with `shoal config create`",
        _ => "create it first or in the same apply",
    }
}

impl ApiService {
    /// Every reference of the applied Services and Tasks to an object that neither
    /// exists nor is made by this apply. (All manifests decoded, so they line up.)
    pub(super) async fn missing_references(
        &self,
        manifests: &[pb::Manifest],
        objects: &[DynamicObject],
    ) -> Result<Vec<String>, Status> {
        let created: HashSet<(&str, &str)> = objects
            .iter()
            .map(|o| (o.kind.as_str(), o.name()))
            .collect();
        let mut known: HashMap<(&'static str, String), bool> = HashMap::new();
        let mut problems = Vec::new();
        for (m, obj) in manifests.iter().zip(objects) {
            if obj.kind != "Service" && obj.kind != "Task" {
                continue;
            }
            // Validation already passed, so the fields decode; if not, nothing to check.
            let spec = obj
                .body
                .get("spec")
                .and_then(|spec| NamedSpec::deserialize(spec).ok())
                .unwrap_or_default();
            for (path, kind, name) in spec.named() {
                if created.contains(&(kind, name)) {
                    continue;
                }
                let exists = match known.get(&(kind, name.to_string())) {
                    Some(e) => *e,
                    None => {
                        let found = self
                            .objects
                            .get(kind_of(kind)?, name)
                            .await
                            .map_err(status_of)?
                            .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
                        known.insert((kind, name.to_string()), found);
                        found
                    }
                };
                if !exists {
                    problems.push(format!(
                        "{}: {path}: {} {name:?} does not exist; {}",
                        m.source,
                        kind.to_ascii_lowercase(),
                        remedy(kind)
                    ));
                }
            }
        }
        Ok(problems)
    }
}
