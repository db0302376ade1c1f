use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::container::*;
use super::define_kind;
use super::workload::*;
use crate::meta::{Condition, Timestamp};
use crate::validate::{Problems, Validate};

define_kind! {
    /// A container workload (Swarm's service): replicated, global, a job or a cron job.
    Service {
        kind: "Service",
        plural: "services",
        short: ["svc"],
        spec: ServiceSpec,
        status: ServiceStatus,
        dotted_names: false,
    }
}

/// What a Service runs (its task template: the container and where it may run) and
/// how many, how it is updated and restarted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The container each task runs (`image`, `command`, `env`, ... directly under
    /// `spec`).
    #[serde(flatten)]
    pub container: ContainerSpec,
    #[serde(default)]
    pub mode: ServiceMode,
    /// Tasks to run in mode `replicated` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub update: UpdateConfig,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// For modes `job` and `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSpec>,
    /// For mode `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronSpec>,
    /// `vip` (default): one virtual IP per network; `dnsrr`: DNS gives task addresses.
    #[serde(default, skip_serializing_if = "is_default")]
    pub endpoint_mode: EndpointMode,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl ServiceSpec {
    /// Desired tasks in mode `replicated`.
    pub fn desired_replicas(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }

    /// The restart condition in force: `on-failure` for jobs, `any` otherwise, unless set.
    pub fn restart_condition(&self) -> RestartCondition {
        self.restart.condition.unwrap_or(match self.mode {
            ServiceMode::Job | ServiceMode::Cron => RestartCondition::OnFailure,
            _ => RestartCondition::Any,
        })
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Tasks wanted now.
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub running_replicas: u32,
    /// Tasks running the current spec.
    #[serde(default)]
    pub updated_replicas: u32,
    /// Jobs: tasks that completed successfully.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub succeeded: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStatus>,
    /// Recent spec revisions, newest last (`shoal rollout history`, `undo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    /// Cron: when the last run was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    pub state: UpdateState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The generation being rolled out.
    #[serde(default)]
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the last batch of tasks was started; the next waits `update.delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub generation: i64,
    /// The task template hash of that revision.
    pub template: String,
    pub time: Timestamp,
    /// Why it was made: `apply`, `rollback`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
    pub spec: Box<ServiceSpec>,
}

impl Validate for ServiceSpec {
    fn validate(&self, p: &mut Problems) {
        self.container.check(p, "spec");
        check_placement(p, "spec.placement", &self.placement);
        if self.replicas.is_some() && self.mode != ServiceMode::Replicated {
            p.push("spec.replicas", "only for mode: replicated");
        }
        if self.job.is_some() && !matches!(self.mode, ServiceMode::Job | ServiceMode::Cron) {
            p.push("spec.job", "only for mode: job or cron");
        }
        if let Some(job) = &self.job {
            if job.completions == 0 {
                p.push("spec.job.completions", "must be at least 1");
            }
            if job.parallelism == 0 {
                p.push("spec.job.parallelism", "must be at least 1");
            }
        }
        match (&self.cron, self.mode) {
            (None, ServiceMode::Cron) => p.push("spec.cron", "mode: cron needs cron.schedule"),
            (Some(_), m) if m != ServiceMode::Cron => p.push("spec.cron", "only for mode: cron"),
            (Some(c), _) => match parse_schedule(&c.schedule) {
                Err(why) => p.push("spec.cron.schedule", why),
                // `59 23 31 2 *` parses but never fires: a cron service that never runs.
                // Checked here, once per write, not where the controller parses it.
                Ok(cron) => {
                    if cron
                        .find_next_occurrence(&chrono::Utc::now(), false)
                        .is_err()
                    {
                        p.push(
                            "spec.cron.schedule",
                            format!("{:?} never fires (no such date)", c.schedule),
                        );
                    }
                }
            },
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.update.max_failure_ratio) {
            p.push("spec.update.maxFailureRatio", "must be between 0 and 1");
        }
        if self.restart.delay.0 > std::time::Duration::from_secs(24 * 3600) {
            p.push("spec.restart.delay", "must be at most 24h");
        }
    }
}

/// Parses a cron schedule in UTC: five fields (minute hour day-of-month month
/// day-of-week), six with seconds first, or an alias like `@hourly`.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if !(fields == 5 || fields == 6 || (fields == 1 && text.trim().starts_with('@'))) {
        return Err(format!(
            "{text:?}: expected five fields: minute hour day-of-month month day-of-week (or six, with seconds first)"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|e| format!("{text:?}: {e}"))
}
