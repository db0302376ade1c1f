//! The scheduler: binds pending tasks to nodes.
//!
//! Unlike the keyed controllers it works in rounds: whenever tasks or nodes change, it
//! takes every pending task, places them all in memory against one snapshot of the
//! nodes (accounting for each placement as it goes), then writes the bindings
//! concurrently. One round costs one pass over the nodes per task and lets the store
//! batch the writes (group commit, or many requests in flight to etcd).
//!
//! Filters: ready, availability active, constraints, reservations, host-mode ports,
//! maxReplicasPerNode. Score: fewest tasks of the same service, then the emptiest group
//! of a `spread` preference, then fewest tasks overall.

mod placement;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shoal_api::{DesiredState, EventType, Node, ObjectReference, Resource, Task, TaskState};
use shoal_reconcile::{CancellationToken, EventRecorder, Informers, Reader};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;
use tokio::sync::Notify;

pub use placement::{place, place_all, snapshot, NodeInfo, Placement};

/// How a task that fits nowhere says so in `status.message`, before the reasons.
pub const NO_SUITABLE_NODE: &str = "no suitable node: ";

/// Whether any node that passes `t`'s filters could take it whatever else lands there at
/// the same time: no reservations, no host-mode ports, no per-node cap. Such a task can
/// be placed by whoever creates it, from a snapshot, without the scheduler's exact
/// accounting: two placements racing can only make the spread less even.
pub fn freely_placeable(t: &Task) -> bool {
    t.spec.node.is_none()
        && t.spec.desired_state == DesiredState::Running
        && t.spec.container.resources.reservations.is_none()
        && t.spec.placement.max_replicas_per_node == 0
        && !t
            .spec
            .container
            .ports
            .iter()
            .any(|p| p.mode == shoal_api::PublishMode::Host && p.published.is_some())
}

/// Binds `t` to `node` the way a scheduling round does: spec and status in one write.
pub fn bind(t: &mut Task, node: String, now: chrono::DateTime<Utc>) {
    t.spec.node = Some(node);
    let mut status = t.status.take().unwrap_or_default();
    status.state = TaskState::Assigned;
    status.message = String::new();
    status.last_transition_time = Some(now);
    t.status = Some(status);
}

/// A task is placed once its networks have given it addresses (Swarm allocates before
/// it schedules): until then it waits, and the network controller says why.
fn needs_binding(t: &Task) -> bool {
    t.spec.node.is_none()
        && t.is_addressed()
        && t.spec.desired_state == DesiredState::Running
        && t.metadata.deletion_timestamp.is_none()
        && t.status
            .as_ref()
            .is_none_or(|s| s.state == TaskState::Pending)
}

pub async fn run(informers: Informers, shutdown: CancellationToken) {
    let objects = informers.objects().clone();
    let wake = Arc::new(Notify::new());
    let (tasks, nodes) = (informers.get::<Task>(), informers.get::<Node>());
    let w = wake.clone();
    tasks.on_change(move |_| w.notify_one());
    let w = wake.clone();
    nodes.on_change(move |_| w.notify_one());
    let (task_reader, node_reader) = (tasks.reader(), nodes.reader());
    task_reader.wait_ready().await;
    node_reader.wait_ready().await;
    tracing::info!("scheduler starting");
    let events = EventRecorder::new(objects.clone(), "scheduler");
    let mut warned: HashMap<String, String> = HashMap::new();
    while !shutdown.is_cancelled() {
        let (bound, planning) =
            round(&objects, &task_reader, &node_reader, &events, &mut warned).await;
        // Planning a round costs O(tasks + pending × log nodes) of CPU; while tasks
        // stream in, let them pile up for as long as that took rather than re-planning
        // per batch. (Waiting on the store's writes costs no CPU and does not count.)
        let settle = planning.clamp(Duration::from_millis(20), Duration::from_millis(500));
        if bound > 0 {
            tokio::time::sleep(settle).await;
            continue; // More may have arrived while writing.
        }
        tokio::select! {
            _ = wake.notified() => {}
            // Pending tasks are retried even without changes (a node's resources freeing).
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => break,
        }
        // Let a burst of changes land before the next round.
        tokio::time::sleep(settle).await;
    }
}

/// One scheduling round; returns how many tasks were bound and how long planning took.
async fn round(
    objects: &ObjectStore,
    tasks: &Reader<Task>,
    nodes: &Reader<Node>,
    events: &EventRecorder,
    warned: &mut HashMap<String, String>,
) -> (usize, Duration) {
    let started = tokio::time::Instant::now();
    let all_tasks = tasks.list();
    let node_list = nodes.list();
    report_missing_nodes(objects, events, &all_tasks, &node_list).await;
    let mut pending: Vec<Arc<Task>> = all_tasks
        .iter()
        .filter(|t| needs_binding(t))
        .cloned()
        .collect();
    if pending.is_empty() {
        warned.clear();
        return (0, started.elapsed());
    }
    pending.sort_by(|a, b| {
        (a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(b.metadata.creation_timestamp, &b.metadata.name))
    });
    let span = tracing::info_span!("schedule", pending = pending.len(), nodes = node_list.len());
    let _enter = span.enter();
    let mut infos = placement::snapshot(&node_list, &all_tasks);
    let mut binds = Vec::new();
    let mut unschedulable = Vec::new();
    let refs: Vec<&Task> = pending.iter().map(Arc::as_ref).collect();
    for (task, placed) in pending.iter().zip(place_all(&refs, &mut infos)) {
        match placed {
            Placement::Node(n) => binds.push((task.clone(), n)),
            Placement::Nowhere(reason) => unschedulable.push((task.clone(), reason)),
        }
    }
    drop(_enter);
    let planning = started.elapsed();
    let bound = bind_all(objects, binds).await;
    // Each task says why in its status; the Warning goes to its service, once for all
    // of its tasks that fail for the same reason (50 replicas that fit nowhere are one
    // event, not 50), and to a standalone task itself.
    let mut by_service: HashSet<(ObjectReference, String)> = HashSet::new();
    for (task, reason) in unschedulable {
        let message = format!("{NO_SUITABLE_NODE}{reason}");
        if task.status.as_ref().map(|s| &s.message) != Some(&message) {
            set_pending_message(objects, &task, &message).await;
        }
        match owning_service(&task) {
            Some(svc) => {
                by_service.insert((svc, reason));
            }
            None => {
                if warned.get(task.name()) != Some(&message) {
                    warned.insert(task.name().to_string(), message.clone());
                    events
                        .warning(task.as_ref(), "FailedScheduling", &message)
                        .await;
                }
            }
        }
    }
    // The message leaves the count out (the service's condition has it): tasks created
    // over several rounds are one Warning, not one per count seen.
    for (svc, reason) in by_service {
        let message = format!("its tasks cannot be placed: {reason}");
        let key = format!("service/{}", svc.name);
        if warned.get(&key) != Some(&message) {
            warned.insert(key, message.clone());
            events
                .record(svc, EventType::Warning, "FailedScheduling", &message)
                .await;
        }
    }
    tracing::debug!(bound, ?planning, "scheduling round done");
    (bound, planning)
}

/// Writes bindings in store batches (one etcd transaction per 100 when none
/// conflicts), several batches in flight. Returns how many landed.
async fn bind_all(objects: &ObjectStore, binds: Vec<(Arc<Task>, String)>) -> usize {
    let now = Utc::now();
    let tasks: Vec<Task> = binds
        .into_iter()
        .map(|(task, node)| {
            let mut t = (*task).clone();
            bind(&mut t, node, now);
            t
        })
        .collect();
    let mut bound = 0;
    for r in objects.put_many(tasks, true).await {
        match r {
            Ok(_) => bound += 1,
            // A stale cache entry: the next round sees the fresh task.
            Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "bind failed"),
        }
    }
    bound
}

/// A task bound by hand (`spec.node`) to a node that has not joined waits for it; its
/// status says so, and one Warning, so it is not silently pending forever.
async fn report_missing_nodes(
    objects: &ObjectStore,
    events: &EventRecorder,
    tasks: &[Arc<Task>],
    nodes: &[Arc<Node>],
) {
    let known: HashSet<&str> = nodes.iter().map(|n| n.name()).collect();
    for task in tasks {
        let Some(node) = task.spec.node.as_deref() else {
            continue;
        };
        let waiting = task.spec.desired_state == DesiredState::Running
            && task.metadata.deletion_timestamp.is_none()
            && task.is_addressed()
            && task
                .status
                .as_ref()
                .is_none_or(|s| s.state == TaskState::Pending);
        if !waiting || known.contains(node) {
            continue;
        }
        let message =
            format!("node {node} does not exist: the task waits for a node of that name to join");
        if task.status.as_ref().map(|s| &s.message) != Some(&message) {
            set_pending_message(objects, task, &message).await;
            events
                .warning(task.as_ref(), "NodeNotFound", &message)
                .await;
        }
    }
}

/// The Service that made `task`, by its owner reference.
fn owning_service(task: &Task) -> Option<ObjectReference> {
    task.metadata
        .owner_references
        .iter()
        .find(|o| o.kind == "Service")
        .map(|o| ObjectReference {
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: Some(o.uid.clone()),
        })
}

async fn set_pending_message(objects: &ObjectStore, task: &Task, message: &str) {
    let mut status = task.status.clone().unwrap_or_default();
    status.state = TaskState::Pending;
    status.message = message.to_string();
    // Best effort: the Warning event carries the same message.
    let _ = objects.update_status_of(task, &status).await;
}
