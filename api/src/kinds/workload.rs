//! The workload settings Services carry and hand down to their Tasks: mode, restart
//! policy, rolling updates, placement, resources, ports, jobs and cron.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::{ByteSize, Duration};
use crate::validate::Problems;

/// How a Service is reached on its networks (Swarm's `--endpoint-mode`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP per network, balanced over the tasks in the kernel.
    #[default]
    Vip,
    /// DNS answers with the tasks' own addresses, in turn.
    Dnsrr,
}

/// How a Service's tasks are laid out (Swarm's modes, plus cron).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// `replicas` tasks, in slots `<service>.1..N`.
    #[default]
    Replicated,
    /// One task per eligible node, named `<service>.<node>`.
    Global,
    /// Tasks that run to completion (`job.completions`, `job.parallelism`).
    Job,
    /// A job per tick of `cron.schedule`.
    Cron,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

/// When a task that stopped is replaced by a new one in the same slot.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartPolicy {
    /// `any` (default for services), `on-failure` (default for jobs) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<RestartCondition>,
    /// Wait between a task stopping and its replacement.
    #[serde(default = "five_seconds")]
    pub delay: Duration,
    /// Replacements per slot within `window` (0: unlimited).
    #[serde(default)]
    pub max_attempts: u32,
    /// The window `maxAttempts` counts in (0: the slot's whole life).
    #[serde(default)]
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: None,
            delay: five_seconds(),
            max_attempts: 0,
            window: Duration::default(),
        }
    }
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

/// A command run inside the container to tell whether it works (Docker's
/// HEALTHCHECK). A task whose check fails `retries` times in a row is unhealthy: it
/// fails and its service replaces it; rolling updates wait for new tasks to be healthy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Run as is (no shell), like `CMD` in Docker's exec form; exit 0 means healthy.
    pub cmd: Vec<String>,
    /// Between checks.
    #[serde(default = "thirty_seconds")]
    pub interval: Duration,
    /// A check that takes longer has failed.
    #[serde(default = "thirty_seconds")]
    pub timeout: Duration,
    /// Failures in a row that make the task unhealthy.
    #[serde(default = "three")]
    pub retries: u32,
    /// Failures right after start do not count for this long.
    #[serde(default)]
    pub start_period: Duration,
}

pub(crate) fn check_healthcheck(p: &mut Problems, path: &str, h: &Option<HealthCheck>) {
    let Some(h) = h else { return };
    if h.cmd.is_empty() || h.cmd[0].trim().is_empty() {
        p.push(format!("{path}.cmd"), "needs a command");
    }
    if h.interval.0.is_zero() {
        p.push(format!("{path}.interval"), "must be longer than 0s");
    }
    if h.timeout.0.is_zero() {
        p.push(format!("{path}.timeout"), "must be longer than 0s");
    }
    if h.retries == 0 {
        p.push(format!("{path}.retries"), "must be at least 1");
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

/// How a spec change rolls out (Swarm's update_config).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateConfig {
    /// Tasks updated at once (0: all at once).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Wait between batches.
    #[serde(default)]
    pub delay: Duration,
    #[serde(default)]
    pub order: UpdateOrder,
    #[serde(default)]
    pub failure_action: FailureAction,
    /// How long an updated task must run before it counts as a success.
    #[serde(default = "five_seconds")]
    pub monitor: Duration,
    /// Fraction of updated tasks that may fail before `failureAction` applies.
    #[serde(default)]
    pub max_failure_ratio: f64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::default(),
            order: UpdateOrder::default(),
            failure_action: FailureAction::default(),
            monitor: five_seconds(),
            max_failure_ratio: 0.0,
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpreadPreference {
    /// A node attribute to spread tasks evenly over, like `node.labels.rack`.
    pub spread: String,
}

/// Where tasks may run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// `node.name|node.role|node.labels.KEY (==|!=) value`, all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<SpreadPreference>,
    /// At most this many of the service's tasks per node (0: no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_replicas_per_node: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
            && self.preferences.is_empty()
            && self.max_replicas_per_node == 0
    }
}

/// A parsed placement constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// `node.name`, `node.role` or `node.labels.KEY`.
    pub attribute: String,
    pub equals: bool,
    pub value: String,
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let (attr, equals, value) = if let Some((a, v)) = text.split_once("!=") {
            (a, false, v)
        } else if let Some((a, v)) = text.split_once("==") {
            (a, true, v)
        } else {
            return Err(format!(
                "{text:?}: expected ATTRIBUTE == VALUE or ATTRIBUTE != VALUE"
            ));
        };
        let attribute = attr.trim().to_string();
        check_attribute(&attribute).map_err(|why| format!("{text:?}: {why}"))?;
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(format!("{text:?}: the value is missing"));
        }
        // `a === b` splits as `a` == `= b`: no value has an operator's characters.
        if value.contains(['=', '!', '<', '>']) || value.contains(char::is_whitespace) {
            return Err(format!(
                "{text:?}: unknown operator: expected ATTRIBUTE == VALUE or ATTRIBUTE != VALUE"
            ));
        }
        Ok(Constraint {
            attribute,
            equals,
            value,
        })
    }
}

/// The node attributes constraints and spread preferences may name.
pub fn check_attribute(attr: &str) -> Result<(), String> {
    match attr {
        "node.name" | "node.hostname" | "node.role" => Ok(()),
        a if a
            .strip_prefix("node.labels.")
            .is_some_and(|k| !k.is_empty()) =>
        {
            Ok(())
        }
        a => Err(format!(
            "unknown attribute {a:?}: use node.name, node.role or node.labels.KEY"
        )),
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    /// CPUs (fractions allowed).
    #[serde(default)]
    pub cpu: f64,
    #[serde(default)]
    pub memory: ByteSize,
}

/// Reservations are set aside on the node a task is placed on; a task is placed only
/// where they fit. Limits cap what a task may use, and a node must be able to give it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<ResourceAmounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.reservations.is_none() && self.limits.is_none()
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// As manifests write it: `tcp`, `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Published on every node through the routing mesh.
    #[default]
    Ingress,
    /// Published on the node the task runs on; two such tasks cannot share a node.
    Host,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    pub target: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PublishMode,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// Successful tasks needed for the job to be complete.
    #[serde(default = "one")]
    pub completions: u32,
    /// Tasks running at once.
    #[serde(default = "one")]
    pub parallelism: u32,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            completions: 1,
            parallelism: 1,
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Start the new run even if the previous one is still going.
    Allow,
    /// Skip a tick while the previous run is still going.
    #[default]
    Forbid,
    /// Stop the previous run and start the new one.
    Replace,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronSpec {
    /// Cron syntax in UTC: `*/5 * * * *` (or six fields, seconds first: `*/10 * * * * *`).
    pub schedule: String,
    #[serde(default)]
    pub concurrency: ConcurrencyPolicy,
    /// Finished runs to keep.
    #[serde(default = "three")]
    pub history: u32,
}

fn three() -> u32 {
    3
}

pub(crate) fn check_placement(p: &mut Problems, path: &str, placement: &Placement) {
    for (i, c) in placement.constraints.iter().enumerate() {
        if let Err(why) = Constraint::parse(c) {
            p.push(format!("{path}.constraints[{i}]"), why);
        }
    }
    for (i, pref) in placement.preferences.iter().enumerate() {
        if let Err(why) = check_attribute(pref.spread.trim()) {
            p.push(format!("{path}.preferences[{i}].spread"), why);
        }
    }
}

pub(crate) fn check_resources(p: &mut Problems, path: &str, r: &Resources) {
    for (name, amounts) in [("reservations", &r.reservations), ("limits", &r.limits)] {
        if let Some(a) = amounts {
            if !(a.cpu.is_finite() && a.cpu >= 0.0) {
                p.push(
                    format!("{path}.{name}.cpu"),
                    "must be a number of CPUs, 0 or more",
                );
            }
        }
    }
    if let (Some(res), Some(lim)) = (&r.reservations, &r.limits) {
        if lim.cpu > 0.0 && res.cpu > lim.cpu {
            p.push(
                format!("{path}.reservations.cpu"),
                "is more than limits.cpu",
            );
        }
        if lim.memory.0 > 0 && res.memory.0 > lim.memory.0 {
            p.push(
                format!("{path}.reservations.memory"),
                "is more than limits.memory",
            );
        }
    }
}

pub(crate) fn check_ports(p: &mut Problems, path: &str, ports: &[PortSpec]) {
    let mut seen = std::collections::HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        if port.target == 0 {
            p.push(
                format!("{path}[{i}].target"),
                "must be a port from 1 to 65535",
            );
        }
        if port.published == Some(0) {
            p.push(
                format!("{path}[{i}].published"),
                "must be a port from 1 to 65535",
            );
        }
        if let Some(published) = port.published {
            if !seen.insert((published, port.protocol)) {
                p.push(
                    format!("{path}[{i}].published"),
                    format!("port {published} is published twice"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints() {
        let c = Constraint::parse("node.labels.zone == eu").expect("ok");
        assert_eq!(
            (c.attribute.as_str(), c.equals, c.value.as_str()),
            ("node.labels.zone", true, "eu")
        );
        let c = Constraint::parse("node.role!=manager").expect("ok");
        assert!(!c.equals);
        assert!(Constraint::parse("node.zone == eu").is_err());
        assert!(Constraint::parse("node.name = x").is_err());
        assert!(Constraint::parse("node.name ==").is_err());
    }
}
