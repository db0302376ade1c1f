//! The garbage collector: a Task whose owner (a Service, by `ownerReferences`) no longer
//! exists, or exists with another uid (deleted and re-created), is deleted, as
//! Kubernetes' garbage collector does for dependents. Each deletion is an Event.

use std::sync::Arc;

use shoal_api::{kind_by_name, Resource, Service, Task};
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
    events: EventRecorder,
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(informers: Informers, shutdown: CancellationToken) {
    let objects = informers.objects().clone();
    let services_reader = informers.get::<Service>().reader();
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
        let kind = shoal_api::kind_of::<Task>();
        match ctx.objects.delete(kind, task.name()).await {
            Ok(_) | Err(ObjectError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let message = format!("deleted: its owner {}/{} is gone", owner.kind, owner.name);
        ctx.events
            .normal(task.as_ref(), "GarbageCollected", &message)
            .await;
        return Ok(Action::AwaitChange);
    }
    Ok(Action::AwaitChange)
}
