use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::container::*;
use super::define_kind;
use super::network::NetworkRef;
use super::workload::*;
use crate::meta::{Condition, Timestamp};
use crate::validate::{Problems, Validate};

define_kind! {
    /// One container: a slot of a Service, or a one-off applied directly.
    Task {
        kind: "Task",
        plural: "tasks",
        short: [],
        spec: TaskSpec,
        status: TaskStatus,
        dotted_names: true,
    }
}

/// One container to run on one node, and what the node should do with it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// The container to run (`image`, `command`, `env`, ... directly under `spec`).
    #[serde(flatten)]
    pub container: ContainerSpec,
    /// The node this task is bound to; set by the scheduler unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `running`, or `shutdown` to have the node stop it.
    #[serde(default)]
    pub desired_state: DesiredState,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// Restarts of the container in place, on its node, for a task applied on its own
    /// (`shoal run --restart`); a service's tasks are replaced per the service's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    Shutdown,
}

impl Validate for TaskSpec {
    fn validate(&self, p: &mut Problems) {
        self.container.check(p, "spec");
        check_placement(p, "spec.placement", &self.placement);
        if let Some(node) = &self.node {
            if let Err(why) = crate::meta::check_name(node, true) {
                p.push("spec.node", why);
            }
        }
    }
}

/// A task's life, in Swarm's words.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    Pending,
    Assigned,
    Preparing,
    Starting,
    Running,
    Complete,
    Failed,
    Rejected,
    Shutdown,
    Orphaned,
}

impl TaskState {
    /// The task will not run (again): nothing more happens to it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Complete
                | TaskState::Failed
                | TaskState::Rejected
                | TaskState::Shutdown
                | TaskState::Orphaned
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Shutdown => "shutdown",
            TaskState::Orphaned => "orphaned",
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    #[serde(default)]
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
    /// When the task last entered `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// With a health check: `starting`, then `healthy` or `unhealthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Times the node restarted the container in place (`spec.restart`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// The address the network controller gave the task on each of its networks: the
    /// node wires the container with these (what it wired is in `addresses`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub network: String,
    /// `IP/prefix`, like `10.0.1.5/24`.
    pub address: String,
    /// The network's VXLAN id: the node names and builds its devices by it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vni: u32,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// Every network in `networks` has an address among `attachments`: what a task waits
/// for before it is sent to its node (shared with the dispatcher, which reads stored
/// JSON without decoding whole tasks).
pub fn all_attached(networks: &[NetworkRef], attachments: &[Attachment]) -> bool {
    networks
        .iter()
        .all(|n| attachments.iter().any(|a| a.network == n.name()))
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Set by `shoal start` to the time it asked for an ended task to run again: the node
/// starts the same container again, and its status may leave the ended state.
pub const START_ANNOTATION: &str = crate::labels::START;

impl Task {
    /// Every network the task joins has given it an address. Until then it is not sent
    /// to its node, so it has never run there.
    pub fn is_addressed(&self) -> bool {
        let attachments = self.status.as_ref().map_or(&[][..], |s| &s.attachments[..]);
        all_attached(&self.spec.container.networks, attachments)
    }

    /// When `shoal start` last asked for this task to run again.
    pub fn start_requested(&self) -> Option<Timestamp> {
        self.metadata
            .annotations
            .get(START_ANNOTATION)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}
