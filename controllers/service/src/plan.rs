//! The service controller's pure core: from a Service, its tasks, the nodes and the
//! time, decide what to create, stop, archive and delete, and what the status says.
//! No I/O here; `lib.rs` carries a plan out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::{
    Availability, Constraint, DesiredState, Node, NodeState, RestartCondition, Service,
    ServiceMode, ServiceSpec, ServiceStatus, Task, TaskState, Timestamp,
};

use crate::template::{attempt_of, is_history, label, new_task, template_hash, SLOT};

/// Tasks kept per slot besides the live one.
pub const HISTORY_PER_SLOT: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub creates: Vec<Task>,
    pub shutdowns: Vec<Arc<Task>>,
    /// Moved to a history name (same uid), freeing the live name.
    pub archives: Vec<Arc<Task>>,
    pub deletes: Vec<Arc<Task>>,
    pub status: ServiceStatus,
    pub events: Vec<Ev>,
    pub requeue: Option<Duration>,
    /// Automatic rollback: replace the spec with this one.
    pub rollback_to: Option<ServiceSpec>,
}

impl Plan {
    pub fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.events.push(Ev {
            warning,
            reason,
            message,
        });
    }

    pub fn requeue_in(&mut self, d: Duration) {
        let d = d.max(Duration::from_millis(50));
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    /// Asks `t` to stop (once, however many rules want it stopped).
    pub fn shutdown(&mut self, t: &Arc<Task>) {
        if !self.is_stopping(t) {
            self.shutdowns.push(t.clone());
        }
    }

    pub fn is_stopping(&self, t: &Task) -> bool {
        self.shutdowns
            .iter()
            .any(|s| s.metadata.name == t.metadata.name)
    }
}

/// One place a task should be: a replica slot, a node (global), a job completion.
#[derive(Debug, Clone)]
pub struct Slot {
    pub key: String,
    pub name: String,
    pub node: Option<String>,
    pub run: Option<String>,
}

pub struct View<'a> {
    pub svc: &'a Service,
    pub tasks: &'a [Arc<Task>],
    pub nodes: &'a [Arc<Node>],
    pub now: Timestamp,
}

pub fn state(t: &Task) -> TaskState {
    t.status.as_ref().map(|s| s.state).unwrap_or_default()
}

fn since(now: Timestamp, t: Option<Timestamp>) -> Duration {
    t.and_then(|t| (now - t).to_std().ok()).unwrap_or_default()
}

/// How long a task has been in its state; unknown (no `lastTransitionTime`) counts as
/// long ago, so a task whose status lacks the time is replaced, never waited on forever.
fn in_state_for(now: Timestamp, t: &Task) -> Duration {
    match t.status.as_ref().and_then(|s| s.last_transition_time) {
        Some(at) => since(now, Some(at)),
        None => Duration::MAX,
    }
}

/// Whether a task has run the current spec long enough (and, with a health check, is
/// healthy) to count as updated.
pub fn healthy(t: &Task, monitor: Duration, now: Timestamp) -> bool {
    let checked = t.spec.container.healthcheck.is_none()
        || t.status.as_ref().and_then(|s| s.health) == Some(shoal_api::Health::Healthy);
    state(t) == TaskState::Running
        && checked
        && since(now, t.status.as_ref().and_then(|s| s.started_at)) >= monitor
}

/// The tasks of one service by live name and by slot; keys borrow from the tasks, as
/// a pass over a large service builds this for every task.
pub struct Index<'a> {
    pub live: HashMap<&'a str, &'a Arc<Task>>,
    pub by_slot: HashMap<&'a str, Vec<&'a Arc<Task>>>,
}

pub fn index(tasks: &[Arc<Task>]) -> Index<'_> {
    let mut live = HashMap::with_capacity(tasks.len());
    let mut by_slot: HashMap<&str, Vec<&Arc<Task>>> = HashMap::with_capacity(tasks.len());
    for t in tasks {
        if !is_history(t) {
            live.insert(t.metadata.name.as_str(), t);
        }
        if let Some(slot) = label(t, SLOT) {
            by_slot.entry(slot).or_default().push(t);
        }
    }
    Index { live, by_slot }
}

/// Nodes a global service runs on: ready, active, and matching the constraints.
pub fn eligible_nodes(spec: &ServiceSpec, nodes: &[Arc<Node>]) -> Vec<String> {
    let constraints: Vec<Constraint> = spec
        .placement
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect();
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.state == NodeState::Ready)
                && n.spec.availability == Availability::Active
                && constraints.iter().all(|c| {
                    let value = match c.attribute.as_str() {
                        "node.name" | "node.hostname" => Some(n.metadata.name.as_str()),
                        "node.role" => Some(match n.spec.role {
                            shoal_api::NodeRole::Manager => "manager",
                            shoal_api::NodeRole::Worker => "worker",
                        }),
                        a => a
                            .strip_prefix("node.labels.")
                            .and_then(|k| n.metadata.labels.get(k))
                            .map(String::as_str),
                    };
                    (value == Some(c.value.as_str())) == c.equals
                })
        })
        .map(|n| n.metadata.name.clone())
        .collect();
    out.sort();
    out
}

/// What the slot engine needs to know about the mode.
pub struct SlotRules {
    /// Job-like: a completed task is done, not restarted.
    pub run_to_completion: bool,
    /// Job parallelism: at most this many unfinished tasks (None: no limit).
    pub parallelism: Option<usize>,
}

/// Drives every slot toward one live, running task of the current spec: creates,
/// restarts (per the restart policy), replaces stopped and orphaned tasks, moves tasks
/// off drained nodes, stops tasks of slots no longer wanted, and reaps history.
pub fn plan_slots(view: &View, idx: &Index, wanted: &[Slot], rules: &SlotRules, plan: &mut Plan) {
    let spec = &view.svc.spec;
    let svc = view.svc;
    let drained: Vec<&str> = view
        .nodes
        .iter()
        .filter(|n| n.spec.availability == Availability::Drain)
        .map(|n| n.metadata.name.as_str())
        .collect();
    let wanted_names: HashMap<&str, &Slot> = wanted.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut unfinished = idx
        .live
        .values()
        .filter(|t| wanted_names.contains_key(t.metadata.name.as_str()) && !state(t).is_terminal())
        .count();

    // Live tasks of slots no longer wanted: stop them, then drop them and their history.
    for t in idx.live.values() {
        if wanted_names.contains_key(t.metadata.name.as_str()) {
            continue;
        }
        // Never sent to a node: unbound, or bound but still waiting for an address.
        let never_sent = matches!(state(t), TaskState::Pending | TaskState::Assigned)
            && (t.spec.node.is_none() || !t.is_addressed());
        if state(t).is_terminal() || never_sent {
            if !(rules.run_to_completion && state(t) == TaskState::Complete) {
                plan.deletes.push(Arc::clone(t));
                if let Some(slot) = label(t, SLOT) {
                    for h in idx
                        .by_slot
                        .get(slot)
                        .into_iter()
                        .flatten()
                        .filter(|h| is_history(h))
                    {
                        plan.deletes.push(Arc::clone(h));
                    }
                }
            }
        } else if t.spec.desired_state == DesiredState::Running {
            plan.shutdown(t);
        }
    }

    for slot in wanted {
        let history: Vec<&Arc<Task>> = idx
            .by_slot
            .get(slot.key.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let create = |plan: &mut Plan| plan.creates.push(next_task(svc, idx, slot));
        let Some(t) = idx.live.get(slot.name.as_str()) else {
            if rules.parallelism.is_none_or(|p| unfinished < p) {
                unfinished += 1;
                create(plan);
            }
            continue;
        };
        let st = state(t);
        if t.spec.desired_state == DesiredState::Shutdown {
            // We asked it to stop (update, drain); once it has, replace it.
            if st.is_terminal() || t.spec.node.is_none() {
                plan.archives.push(Arc::clone(t));
                create(plan);
            }
            continue;
        }
        if !st.is_terminal() {
            if let Some(node) = t.spec.node.as_deref().filter(|n| drained.contains(n)) {
                plan.shutdown(t);
                plan.event(
                    false,
                    "TaskDrained",
                    format!("stopping {} on drained node {node}", t.metadata.name),
                );
            }
            continue;
        }
        let condition = spec.restart_condition();
        let restart = match st {
            TaskState::Complete => !rules.run_to_completion && condition == RestartCondition::Any,
            TaskState::Failed | TaskState::Rejected => condition != RestartCondition::None,
            _ => true, // orphaned or shut down from outside: always replaced
        };
        if !restart {
            continue;
        }
        let failed = matches!(st, TaskState::Failed | TaskState::Rejected);
        if failed && spec.restart.max_attempts > 0 {
            let window = spec.restart.window.0;
            let failures = history
                .iter()
                .filter(|h| matches!(state(h), TaskState::Failed | TaskState::Rejected))
                .filter(|h| {
                    // A failure of unknown time counts, as if it were recent.
                    window.is_zero()
                        || h.status
                            .as_ref()
                            .and_then(|s| s.last_transition_time)
                            .is_none_or(|at| since(view.now, Some(at)) <= window)
                })
                .count();
            if failures > spec.restart.max_attempts as usize {
                continue;
            }
        }
        let delay = if matches!(st, TaskState::Orphaned | TaskState::Shutdown) {
            Duration::ZERO
        } else {
            spec.restart.delay.0
        };
        let waited = in_state_for(view.now, t);
        if waited < delay {
            plan.requeue_in(delay - waited);
            continue;
        }
        if failed {
            let why = t
                .status
                .as_ref()
                .map(|s| s.message.clone())
                .unwrap_or_default();
            let code = t
                .status
                .as_ref()
                .and_then(|s| s.exit_code)
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            plan.event(
                true,
                "TaskFailed",
                format!(
                    "{} failed ({why}{code}); starting a replacement",
                    t.metadata.name
                ),
            );
        } else if st == TaskState::Orphaned {
            plan.event(
                false,
                "TaskRescheduled",
                format!(
                    "{} was orphaned ({}); starting a replacement",
                    t.metadata.name,
                    t.status.as_ref().map(|s| s.message.as_str()).unwrap_or("")
                ),
            );
        }
        plan.archives.push(Arc::clone(t));
        create(plan);
    }

    // Reap history beyond the limit, oldest attempts first.
    for tasks in idx.by_slot.values() {
        let mut hist: Vec<&Arc<Task>> = tasks
            .iter()
            .filter(|t| is_history(t) && state(t).is_terminal())
            .copied()
            .collect();
        if hist.len() > HISTORY_PER_SLOT {
            hist.sort_by_key(|t| attempt_of(t));
            let extra = hist.len() - HISTORY_PER_SLOT;
            plan.deletes.extend(hist.into_iter().take(extra).cloned());
        }
    }
}

/// A new task for `slot`, as the next attempt after every task the slot has had.
pub fn next_task(svc: &Service, idx: &Index, slot: &Slot) -> Task {
    let attempt = idx
        .by_slot
        .get(slot.key.as_str())
        .into_iter()
        .flatten()
        .map(|t| attempt_of(t))
        .max()
        .unwrap_or(0)
        + 1;
    new_task(
        svc,
        &slot.name,
        &slot.key,
        attempt,
        slot.node.clone(),
        slot.run.as_deref(),
    )
}

/// The slots each mode wants (cron's come from `cron::plan_runs`).
pub fn wanted_slots(svc: &Service, nodes: &[Arc<Node>]) -> Vec<Slot> {
    let name = &svc.metadata.name;
    match svc.spec.mode {
        ServiceMode::Replicated => (1..=svc.spec.desired_replicas())
            .map(|i| Slot {
                key: i.to_string(),
                name: format!("{name}.{i}"),
                node: None,
                run: None,
            })
            .collect(),
        ServiceMode::Global => eligible_nodes(&svc.spec, nodes)
            .into_iter()
            .map(|n| Slot {
                key: n.clone(),
                name: format!("{name}.{n}"),
                node: Some(n),
                run: None,
            })
            .collect(),
        ServiceMode::Job => {
            let completions = svc.spec.job.clone().unwrap_or_default().completions;
            (1..=completions)
                .map(|i| Slot {
                    key: i.to_string(),
                    name: format!("{name}.{i}"),
                    node: None,
                    run: None,
                })
                .collect()
        }
        ServiceMode::Cron => Vec::new(),
    }
}

/// Counts for status: (running, updated, succeeded).
pub fn counts(idx: &Index, wanted: &[Slot], spec: &ServiceSpec) -> (u32, u32, u32) {
    let current = template_hash(spec);
    let (mut running, mut updated, mut succeeded) = (0, 0, 0);
    for slot in wanted {
        if let Some(t) = idx.live.get(slot.name.as_str()) {
            match state(t) {
                TaskState::Running => {
                    running += 1;
                    if label(t, crate::template::TEMPLATE) == Some(current.as_str()) {
                        updated += 1;
                    }
                }
                TaskState::Complete => succeeded += 1,
                _ => {}
            }
        }
    }
    (running, updated, succeeded)
}
