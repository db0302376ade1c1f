//! The service controller: Swarm's orchestrator as a reconcile loop.
//!
//! Each reconcile takes the Service, its tasks and the nodes from caches, asks the pure
//! planner (`plan`, `rollout`, `cron`) what should change, carries the plan out
//! (archive, delete, stop, create — in that order, each step concurrently), writes the
//! status and records the events.

mod cron;
mod plan;
mod rollout;
mod template;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use shoal_api::meta::set_condition;
use shoal_api::{
    ConditionStatus, DesiredState, DynamicObject, Node, Resource, Service, ServiceMode, Task,
    TaskState, UpdateState,
};
use shoal_controller_scheduler::NO_SUITABLE_NODE;
use shoal_reconcile::{
    Action, CancellationToken, Controller, ControllerConfig, EventRecorder, Informers, Reader,
};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;

pub use plan::{Plan, View};
pub use template::{template_hash, SERVICE};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] ObjectError),
}

pub struct Context {
    objects: ObjectStore,
    tasks: Reader<Task>,
    nodes: Reader<Node>,
    events: EventRecorder,
}

/// Writes in flight at once while carrying out a plan.
const CONCURRENCY: usize = 64;

pub async fn run(informers: Informers, shutdown: CancellationToken) {
    let objects = informers.objects().clone();
    let controller = Controller::<Service>::new(&informers, ControllerConfig::named("service"));
    let task_reader = informers.get::<Task>().reader();
    let node_reader = informers.get::<Node>().reader();
    let services = controller.reader();
    let controller = controller
        .watches(|t: &Task| {
            t.metadata
                .labels
                .get(SERVICE)
                .cloned()
                .into_iter()
                .collect()
        })
        // Node changes matter to global services (eligibility) and to drains.
        .watches(move |_n: &Node| {
            services
                .list()
                .iter()
                .map(|s| s.name().to_string())
                .collect()
        });
    let ctx = Arc::new(Context {
        events: EventRecorder::new(objects.clone(), "service-controller"),
        objects,
        tasks: task_reader,
        nodes: node_reader,
    });
    controller
        .run(reconcile, |_, _, _| Action::Backoff, ctx, shutdown)
        .await
}

/// Plans one reconcile; pure.
pub fn plan_service(view: &View) -> Plan {
    let svc = view.svc;
    let mut plan = Plan {
        status: svc.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    let idx = plan::index(view.tasks);
    rollout::observe_generation(view, &idx, &mut plan);
    let wanted = match svc.spec.mode {
        ServiceMode::Cron => cron::plan_runs(view, &idx, &mut plan),
        _ => plan::wanted_slots(svc, view.nodes),
    };
    let job = svc.spec.job.clone().unwrap_or_default();
    let rules = plan::SlotRules {
        run_to_completion: matches!(svc.spec.mode, ServiceMode::Job | ServiceMode::Cron),
        parallelism: matches!(svc.spec.mode, ServiceMode::Job | ServiceMode::Cron)
            .then_some(job.parallelism as usize),
    };
    if matches!(svc.spec.mode, ServiceMode::Replicated | ServiceMode::Global) {
        rollout::plan_update(view, &idx, &wanted, &mut plan);
    }
    plan::plan_slots(view, &idx, &wanted, &rules, &mut plan);
    status(view, &idx, &wanted, &mut plan);
    plan
}

fn status(view: &View, idx: &plan::Index, wanted: &[plan::Slot], plan: &mut Plan) {
    let svc = view.svc;
    let (running, updated, succeeded) = plan::counts(idx, wanted, &svc.spec);
    let desired = match svc.spec.mode {
        ServiceMode::Cron => wanted
            .iter()
            .filter(|s| {
                idx.live
                    .get(s.name.as_str())
                    .is_none_or(|t| !plan::state(t).is_terminal())
            })
            .count() as u32,
        _ => wanted.len() as u32,
    };
    let st = &mut plan.status;
    let before = st.replicas;
    // A new service scales up from 0 too, so its first pass is an event users see.
    if before != desired && svc.spec.mode == ServiceMode::Replicated {
        let (reason, verb) = if desired > before {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        plan.events.push(plan::Ev {
            warning: false,
            reason,
            message: format!("scaled {verb} from {before} to {desired} tasks"),
        });
    }
    let st = &mut plan.status;
    st.replicas = desired;
    st.running_replicas = running;
    st.updated_replicas = updated;
    st.succeeded = succeeded;
    st.observed_generation = svc.metadata.generation;
    let now = view.now;
    match svc.spec.mode {
        ServiceMode::Replicated | ServiceMode::Global => {
            let (s, reason, msg) = if running >= desired {
                (
                    ConditionStatus::True,
                    "MinimumReplicasAvailable",
                    format!("{running} of {desired} tasks running"),
                )
            } else {
                (
                    ConditionStatus::False,
                    "ReplicasUnavailable",
                    format!("{running} of {desired} tasks running"),
                )
            };
            set_condition(&mut st.conditions, "Available", s, reason, &msg, now);
            let updating = st.update.as_ref().is_some_and(|u| {
                matches!(
                    u.state,
                    UpdateState::Updating | UpdateState::RollbackStarted
                )
            });
            let paused = st.update.as_ref().is_some_and(|u| {
                matches!(u.state, UpdateState::Paused | UpdateState::RollbackPaused)
            });
            let (s, reason, msg) = if paused {
                (
                    ConditionStatus::False,
                    "UpdatePaused",
                    st.update
                        .as_ref()
                        .map(|u| u.message.clone())
                        .unwrap_or_default(),
                )
            } else if updating {
                (
                    ConditionStatus::True,
                    "RollingUpdate",
                    format!("{updated} of {desired} tasks updated"),
                )
            } else if let Some((count, why)) = unschedulable(idx) {
                // Waiting on the scheduler, which cannot help: say why, not "Scaling".
                let tasks = if count == 1 { "task" } else { "tasks" };
                (
                    ConditionStatus::False,
                    "Unschedulable",
                    format!("{count} {tasks} cannot be placed: {why}"),
                )
            } else if running < desired {
                (
                    ConditionStatus::True,
                    "Scaling",
                    format!("{running} of {desired} tasks running"),
                )
            } else {
                (
                    ConditionStatus::False,
                    "Converged",
                    format!("{desired} tasks running the current spec"),
                )
            };
            set_condition(&mut st.conditions, "Progressing", s, reason, &msg, now);
        }
        ServiceMode::Job => {
            let completions = svc.spec.job.clone().unwrap_or_default().completions;
            let done = succeeded >= completions;
            let was_done = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == ConditionStatus::True);
            let (s, reason) = if done {
                (ConditionStatus::True, "Completed")
            } else {
                (ConditionStatus::False, "Running")
            };
            set_condition(
                &mut st.conditions,
                "Complete",
                s,
                reason,
                &format!("{succeeded} of {completions} completions"),
                now,
            );
            if done && !was_done {
                plan.events.push(plan::Ev {
                    warning: false,
                    reason: "JobCompleted",
                    message: format!("all {completions} tasks completed"),
                });
            }
        }
        ServiceMode::Cron => {}
    }
}

/// How many live tasks fit on no node, and the reason the first of them gives.
fn unschedulable(idx: &plan::Index) -> Option<(usize, String)> {
    let mut stuck: Vec<&Task> = idx
        .live
        .values()
        .map(|t| t.as_ref())
        .filter(|t| plan::state(t) == TaskState::Pending)
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.message.starts_with(NO_SUITABLE_NODE))
        })
        .collect();
    stuck.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let first = stuck.first()?.status.as_ref()?;
    let why = first
        .message
        .trim_start_matches(NO_SUITABLE_NODE)
        .to_string();
    Some((stuck.len(), why))
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ServiceError> {
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let tasks: Vec<Arc<Task>> = ctx
        .tasks
        .list()
        .into_iter()
        // Only the tasks this controller made (they carry a slot); a hand-made task that
        // names the service as its owner is left to the garbage collector.
        .filter(|t| t.metadata.labels.contains_key(template::SLOT))
        .filter(|t| {
            t.metadata
                .owner_references
                .iter()
                .any(|o| o.kind == "Service" && o.uid == uid)
        })
        .collect();
    let nodes = ctx.nodes.list();
    let view = View {
        svc: &svc,
        tasks: &tasks,
        nodes: &nodes,
        now: Utc::now(),
    };
    let plan = plan_service(&view);
    execute(&svc, &ctx, plan).await
}

/// Creates tasks already bound when any node could take them (see
/// `freely_placeable`), as Nomad's scheduler writes allocations already placed: one
/// write per task instead of a create and then a bind, a third of a burst's store
/// writes. The placement is the scheduler's own (`place_all` on a snapshot); the rest,
/// and anything that fits nowhere now, is created pending for the scheduler.
fn place_on_creation(ctx: &Context, mut creates: Vec<Task>) -> Vec<Task> {
    let free: Vec<usize> = (0..creates.len())
        .filter(|&i| shoal_controller_scheduler::freely_placeable(&creates[i]))
        .collect();
    if free.is_empty() {
        return creates;
    }
    let mut nodes = shoal_controller_scheduler::snapshot(&ctx.nodes.list(), &ctx.tasks.list());
    let placed = {
        let refs: Vec<&Task> = free.iter().map(|&i| &creates[i]).collect();
        shoal_controller_scheduler::place_all(&refs, &mut nodes)
    };
    let now = Utc::now();
    for (i, placement) in free.into_iter().zip(placed) {
        if let shoal_controller_scheduler::Placement::Node(node) = placement {
            shoal_controller_scheduler::bind(&mut creates[i], node, now);
        }
    }
    creates
}

async fn execute(svc: &Service, ctx: &Context, plan: Plan) -> Result<Action, ServiceError> {
    let objects = &ctx.objects;
    let kind = shoal_api::kind_of::<Task>();
    // Archive: the task moves to its history name (same uid) in one step.
    let archived = futures::stream::iter(plan.archives.iter().cloned())
        .map(|t| async move {
            let mut copy = (*t).clone();
            let attempt = template::attempt_of(&copy);
            copy.metadata.name = format!("{}.{attempt}", t.metadata.name);
            copy.metadata
                .labels
                .insert(template::HISTORY.into(), "true".into());
            let obj = DynamicObject::from_typed(&copy)
                .map_err(|e| ObjectError::Invalid(e.to_string()))?;
            match objects.rename(t.name(), obj).await {
                Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
                // Archived before by a server that copied and then deleted, and stopped
                // in between: the copy is this task, so only the live name is left.
                Err(ObjectError::AlreadyExists { .. }) => {
                    let copy = objects.get_typed::<Task>(&copy.metadata.name).await?;
                    if copy.is_none_or(|c| c.metadata.uid != t.metadata.uid) {
                        return Err(ObjectError::Invalid(format!(
                            "task/{}: its history name is taken by another task",
                            t.name()
                        )));
                    }
                    let rv = t.metadata.revision().unwrap_or(0);
                    match objects.delete_at(kind, t.name(), rv).await {
                        Ok(()) | Err(ObjectError::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let archive_failed = archived.iter().any(Result::is_err);
    for r in archived {
        if let Err(e) = r {
            tracing::debug!(error = %e, "archive did not complete; retrying next reconcile");
        }
    }
    run_all(plan.deletes.iter().cloned(), |t| async move {
        match objects.delete(kind, t.name()).await {
            Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await?;
    run_all(plan.shutdowns.iter().cloned(), |t| async move {
        let mut stopped = (*t).clone();
        stopped.spec.desired_state = DesiredState::Shutdown;
        let obj =
            DynamicObject::from_typed(&stopped).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        match objects.update(obj, None).await {
            Ok(_) | Err(ObjectError::NotFound { .. } | ObjectError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await?;
    if !archive_failed && !plan.creates.is_empty() {
        let creates = place_on_creation(ctx, plan.creates.clone());
        for r in objects.create_many(creates).await {
            match r {
                Ok(_) | Err(ObjectError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(spec) = plan.rollback_to.clone() {
        let mut rolled = svc.clone();
        rolled.spec = spec;
        rolled.status = Some(plan.status.clone());
        let obj =
            DynamicObject::from_typed(&rolled).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        // Spec and status together, so the rollback marker lands with the new generation.
        objects.replace(obj).await?;
        record(ctx, svc, &plan).await;
        return Ok(Action::requeue(Duration::ZERO));
    }
    if svc.status.as_ref() != Some(&plan.status) {
        match objects.update_status_of(svc, &plan.status).await {
            Ok(_) => {}
            // Our cache was behind; the next pass plans again (and says it once).
            Err(ObjectError::Conflict { .. }) => return Ok(Action::requeue(Duration::ZERO)),
            Err(e) => return Err(e.into()),
        }
    }
    record(ctx, svc, &plan).await;
    if archive_failed {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(match plan.requeue {
        Some(d) => Action::requeue(d),
        // Cron and slow starts are also driven by time; a periodic look is cheap.
        None => Action::requeue(Duration::from_secs(30)),
    })
}

/// Events go out only once the status that goes with them is written, so a pass that
/// loses a race (and is planned again) does not report twice.
async fn record(ctx: &Context, svc: &Service, plan: &Plan) {
    for ev in &plan.events {
        if ev.warning {
            ctx.events.warning(svc, ev.reason, &ev.message).await;
        } else {
            ctx.events.normal(svc, ev.reason, &ev.message).await;
        }
    }
}

async fn run_all<F, Fut>(items: impl Iterator<Item = Arc<Task>>, f: F) -> Result<(), ObjectError>
where
    F: Fn(Arc<Task>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ObjectError>>,
{
    let results: Vec<Result<(), ObjectError>> = futures::stream::iter(items)
        .map(f)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}
