use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::define_kind;
use crate::meta::{Condition, Timestamp};
use crate::quantity::ByteSize;
use crate::validate::{Problems, Validate};

define_kind! {
    /// A machine running `shoal agent`. Agents register it; users set labels and
    /// availability.
    Node {
        kind: "Node",
        plural: "nodes",
        short: ["no"],
        spec: NodeSpec,
        status: NodeStatus,
        dotted_names: true,
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Manager,
    #[default]
    Worker,
}

/// Swarm's availability: `pause` takes no new tasks, `drain` also moves tasks away.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default)]
    pub role: NodeRole,
    #[serde(default)]
    pub availability: Availability,
}

impl Validate for NodeSpec {
    fn validate(&self, _: &mut Problems) {}
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Ready,
    Down,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeResources {
    #[serde(default)]
    pub cpu: f64,
    #[serde(default)]
    pub memory: ByteSize,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub state: NodeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<NodeResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Timestamp>,
}
