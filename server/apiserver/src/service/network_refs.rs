//! Apply's check that every network a Service or Task joins exists.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use shoal_api::{DynamicObject, NetworkRef};
use tonic::Status;

use super::{kind_of, status_of, ApiService};
use crate::pb;

/// The one field of a Service or Task spec this check reads.
#[derive(Deserialize, Default)]
struct JoinsSpec {
    #[serde(default)]
    networks: Vec<NetworkRef>,
}

impl ApiService {
    /// Services and tasks may join only networks that exist or that this apply creates,
    /// as Swarm refuses `service create --network` of an unknown network: a task
    /// could never get an address on it. (All manifests decoded, so they line up.)
    pub(super) async fn missing_networks(
        &self,
        manifests: &[pb::Manifest],
        objects: &[DynamicObject],
    ) -> Result<Vec<String>, Status> {
        let created: HashSet<&str> = objects
            .iter()
            .filter(|o| o.kind == "Network")
            .map(|o| o.name())
            .collect();
        let mut known: HashMap<String, bool> = HashMap::new();
        let mut problems = Vec::new();
        for (m, obj) in manifests.iter().zip(objects) {
            if obj.kind != "Service" && obj.kind != "Task" {
                continue;
            }
            // Validation already passed, so the field decodes; if not, nothing to check.
            let joins = obj
                .body
                .get("spec")
                .and_then(|spec| JoinsSpec::deserialize(spec).ok())
                .unwrap_or_default();
            for (i, net) in joins.networks.iter().enumerate() {
                let name = net.name();
                if created.contains(name) {
                    continue;
                }
                let exists = match known.get(name) {
                    Some(e) => *e,
                    None => {
                        let found = self
                            .objects
                            .get(kind_of("Network")?, name)
                            .await
                            .map_err(status_of)?
                            .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
                        known.insert(name.to_string(), found);
                        found
                    }
                };
                if !exists {
                    let path = match net {
                        NetworkRef::Name(_) => format!("spec.networks[{i}]"),
                        NetworkRef::Attachment(_) => format!("spec.networks[{i}].name"),
                    };
                    problems.push(format!(
                        "{}: {path}: network {name:?} does not exist; create it first or in the same apply",
                        m.source
                    ));
                }
            }
        }
        Ok(problems)
    }
}
