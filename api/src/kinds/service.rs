use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{define_kind, require};
use crate::meta::Condition;
use crate::validate::{Problems, Validate};

define_kind! {
    /// A long-running, replicated container workload (Swarm's service).
    Service {
        kind: "Service",
        plural: "services",
        short: ["svc"],
        spec: ServiceSpec,
        status: ServiceStatus,
        dotted_names: false,
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Any OCI image reference.
    #[serde(default)]
    pub image: String,
    /// Overrides the image's entrypoint and cmd when given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Number of tasks to run (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub running_replicas: u32,
    #[serde(default)]
    pub updated_replicas: u32,
}

impl Validate for ServiceSpec {
    fn validate(&self, p: &mut Problems) {
        require(p, "spec.image", &self.image);
        check_env(p, "spec.env", &self.env);
    }
}

/// Environment variable names: non-empty, no '=' and no NUL.
pub(crate) fn check_env(p: &mut Problems, path: &str, env: &BTreeMap<String, String>) {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.push(
                format!("{path}[{k:?}]"),
                "variable names must be non-empty and contain no '=' or NUL",
            );
        }
        if v.contains('\0') {
            p.push(format!("{path}[{k:?}]"), "value must not contain NUL");
        }
    }
}
