//! The garbage collector: a Task whose owner (a Service, by `ownerReferences`) no longer
//! exists, or exists with another uid (deleted and re-created), goes, as Kubernetes'
//! garbage collector does for dependents; each step is an Event.
//!
//! # Guarantees
//! - A task whose container may still run is not deleted: it is first given
//!   `desiredState: shutdown`, and deleted once its node reports it ended (or it never
//!   reached a node, or its node is down), the way Swarm keeps a removed service's
//!   tasks until the agent confirms and Kubernetes keeps a terminating pod. Until then
//!   `shoal get tasks` shows it shutting down.

use std::sync::Arc;

use shoal_api::{kind_by_name, DesiredState, Node, NodeState, Resource, Service, Task, TaskState};
use shoal_reconcile::{
    Action, CancellationToken, Change, Controller, ControllerConfig, EventRecorder, Informers,
    Reader,
};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] ObjectError),
}

pub struct Context {
    objects: ObjectStore,
    services: Reader<Service>,
    nodes: Reader<Node>,
    events: EventRecorder,
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(informers: Informers, shutdown: CancellationToken) {
    let objects = informers.objects().clone();
    let services_reader = informers.get::<Service>().reader();
    let nodes = informers.get::<Node>().reader();
    let controller = Controller::<Task>::new(&informers, ControllerConfig::named("gc"));
    let tasks = controller.reader();
    // A Service's deletion re-checks the Tasks it owned; any other change only matters
    // to tasks naming that service with another uid (it was deleted and re-created).
    // Status updates, the common case, queue nothing.
    let controller = controller.watches_changes(move |change: &Change<Service>| {
        let (deleted, svc) = match change {
            Change::Deleted(s) => (true, s),
            Change::Applied(s) => (false, s),
        };
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        tasks
            .list()
            .iter()
            .filter(|t| {
                t.metadata.owner_references.iter().any(|o| {
                    o.kind == "Service" && o.name == svc.metadata.name && (deleted || o.uid != uid)
                })
            })
            .map(|t| t.name().to_string())
            .collect()
    });
    let ctx = Arc::new(Context {
        events: EventRecorder::new(objects.clone(), "garbage-collector"),
        objects,
        services: services_reader,
        nodes,
    });
    controller
        .run(reconcile, |_, _, _| Action::Backoff, ctx, shutdown)
        .await
}

async fn reconcile(task: Arc<Task>, ctx: Arc<Context>) -> Result<Action, GcError> {
    for owner in &task.metadata.owner_references {
        let alive = match owner.kind.as_str() {
            "Service" => ctx
                .services
                .get(&owner.name)
                .map(|s| s.metadata.uid.clone()),
            other => match kind_by_name(other) {
                Some(kind) => ctx
                    .objects
                    .get(kind, &owner.name)
                    .await?
                    .map(|o| o.metadata.uid),
                None => None,
            },
        };
        if alive.flatten().as_deref() == Some(owner.uid.as_str()) {
            continue;
        }
        let owner = format!("{}/{}", owner.kind, owner.name);
        return if may_still_run(&task, &ctx.nodes) {
            stop(&task, &owner, &ctx).await
        } else {
            delete(&task, &owner, &ctx).await
        };
    }
    Ok(Action::AwaitChange)
}

/// Whether the task's container may still be running: it reached a node that is not
/// down and that node has not reported it ended.
fn may_still_run(task: &Task, nodes: &Reader<Node>) -> bool {
    let Some(node) = task.spec.node.as_deref().filter(|n| !n.is_empty()) else {
        return false;
    };
    let state = task.status.as_ref().map_or(TaskState::Pending, |s| s.state);
    if state.is_terminal() || state == TaskState::Pending {
        return false;
    }
    // Bound but waiting for an address: never sent to its node.
    if state == TaskState::Assigned && !task.is_addressed() {
        return false;
    }
    nodes
        .get(node)
        .is_some_and(|n| n.status.as_ref().is_none_or(|s| s.state != NodeState::Down))
}

/// Asks the task's node to stop it; the node's report brings the task back here.
async fn stop(task: &Task, owner: &str, ctx: &Context) -> Result<Action, GcError> {
    if task.spec.desired_state == DesiredState::Shutdown {
        return Ok(Action::AwaitChange);
    }
    let uid = task.metadata.uid.clone();
    let stopping = ctx
        .objects
        .modify::<Task>(task.name(), |t| {
            if t.metadata.uid != uid || t.spec.desired_state == DesiredState::Shutdown {
                return Ok(false);
            }
            t.spec.desired_state = DesiredState::Shutdown;
            Ok(true)
        })
        .await;
    match stopping {
        Ok(Some(_)) => {
            let message = format!("stopping: its owner {owner} is gone");
            ctx.events.normal(task, "Stopping", &message).await;
        }
        Ok(None) | Err(ObjectError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::AwaitChange)
}

async fn delete(task: &Task, owner: &str, ctx: &Context) -> Result<Action, GcError> {
    let kind = shoal_api::kind_of::<Task>();
    match ctx.objects.delete(kind, task.name()).await {
        Ok(_) | Err(ObjectError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let message = format!("deleted: its owner {owner} is gone");
    ctx.events.normal(task, "GarbageCollected", &message).await;
    Ok(Action::AwaitChange)
}
