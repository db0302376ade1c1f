//! The node controller. A node is `ready` while its heartbeat key (kept alive by the
//! agent through a lease) exists, and `down` once the lease lapses: three missed
//! heartbeats. A down node's unfinished tasks are marked `orphaned`, which the service
//! controller replaces elsewhere. Every transition is an Event.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use shoal_api::meta::set_condition;
use shoal_api::{ConditionStatus, Node, NodeState, Resource, Task, TaskState};
use shoal_reconcile::{
    Action, CancellationToken, Controller, ControllerConfig, EventRecorder, Informers, Reader,
    WorkQueue,
};
use shoal_store::objects::{Follower, Item, ObjectError};
use shoal_store::{ObjectStore, Revision};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] ObjectError),
}

type Alive = Arc<RwLock<HashSet<String>>>;

pub struct Context {
    objects: ObjectStore,
    alive: Alive,
    tasks: Reader<Task>,
    events: EventRecorder,
    /// Ready nodes whose heartbeat key is missing, since when.
    gone_since: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long a ready node's heartbeat key must stay absent before the node is down.
const ABSENT_FOR: Duration = Duration::from_secs(1);

pub async fn run(informers: Informers, shutdown: CancellationToken) {
    let objects = informers.objects().clone();
    let alive: Alive = Arc::default();
    let controller = Controller::<Node>::new(&informers, ControllerConfig::named("node"));
    let task_reader = informers.get::<Task>().reader();
    let queue = controller.queue();
    let (hb_objects, hb_alive) = (objects.clone(), alive.clone());
    let controller = controller
        // A task landing on a down node is orphaned too.
        .watches(|t: &Task| t.spec.node.clone().into_iter().collect())
        .with_background(move |token| {
            Box::pin(follow_heartbeats(hb_objects, hb_alive, queue, token))
        });
    let ctx = Arc::new(Context {
        events: EventRecorder::new(objects.clone(), "node-controller"),
        objects,
        alive,
        tasks: task_reader,
        gone_since: Default::default(),
    });
    controller
        .run(reconcile, |_, _, _| Action::Backoff, ctx, shutdown)
        .await
}

/// Keeps `alive` equal to the set of heartbeat keys and queues every node that changes.
async fn follow_heartbeats(
    objects: ObjectStore,
    alive: Alive,
    queue: WorkQueue,
    shutdown: CancellationToken,
) {
    let mut follower = Heartbeats { alive, queue };
    tokio::select! {
        _ = objects.follow_heartbeats(&mut follower) => {}
        _ = shutdown.cancelled() => {}
    }
}

struct Heartbeats {
    alive: Alive,
    queue: WorkQueue,
}

impl Heartbeats {
    fn set(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.alive.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Follower<()> for Heartbeats {
    fn listed(&mut self, items: Vec<Item<()>>, _revision: Revision) {
        let fresh: HashSet<String> = items.into_iter().map(|i| i.name).collect();
        let changed: Vec<String> = {
            let mut set = self.set();
            let changed = set.symmetric_difference(&fresh).cloned().collect();
            *set = fresh;
            changed
        };
        for n in changed {
            self.queue.add(&n);
        }
    }

    fn applied(&mut self, item: Item<()>) {
        let new = self.set().insert(item.name.clone());
        if new {
            self.queue.add(&item.name);
        }
    }

    fn deleted(&mut self, name: &str, _revision: Revision) {
        let gone = self.set().remove(name);
        if gone {
            self.queue.add(name);
        }
    }
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, NodeError> {
    let name = node.name().to_string();
    let alive = ctx
        .alive
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&name);
    let want = if alive {
        NodeState::Ready
    } else {
        NodeState::Down
    };
    let mut status = node.status.clone().unwrap_or_default();
    // The heartbeat watch and the node watch are separate streams; a node that has
    // just registered may show up here before its heartbeat key does.
    if !alive && status.state == NodeState::Ready {
        let since = status.last_heartbeat.map(|t| Utc::now() - t);
        if since.is_some_and(|d| d < chrono::Duration::seconds(2)) {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        // A key that just went may come straight back: an agent that registers again
        // as its old lease lapses sees the key deleted and then created anew. Down is
        // a key absent for a while, not for an instant.
        let gone_since = *ctx
            .gone_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_insert_with(std::time::Instant::now);
        if gone_since.elapsed() < ABSENT_FOR {
            return Ok(Action::requeue(ABSENT_FOR - gone_since.elapsed()));
        }
    }
    if alive {
        ctx.gone_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
    }
    if status.state != want {
        status.state = want;
        let (cond, reason, message) = if alive {
            (
                ConditionStatus::True,
                "NodeReady",
                format!("node {name} is ready"),
            )
        } else {
            (
                ConditionStatus::False,
                "NodeDown",
                format!("node {name} missed its heartbeats and is down"),
            )
        };
        set_condition(
            &mut status.conditions,
            "Ready",
            cond,
            reason,
            &message,
            Utc::now(),
        );
        status.observed_generation = node.metadata.generation;
        match ctx.objects.update_status_of(node.as_ref(), &status).await {
            Ok(_) => {}
            Err(ObjectError::Conflict { .. }) => return Ok(Action::requeue(Duration::ZERO)),
            Err(e) => return Err(e.into()),
        }
        if alive {
            ctx.events.normal(node.as_ref(), reason, &message).await;
        } else {
            ctx.events.warning(node.as_ref(), reason, &message).await;
        }
    }
    if !alive {
        orphan_tasks(&ctx, &name).await?;
    }
    Ok(Action::AwaitChange)
}

/// Marks the unfinished tasks of a down node `orphaned`.
async fn orphan_tasks(ctx: &Context, node: &str) -> Result<(), ObjectError> {
    for task in ctx.tasks.list() {
        if task.spec.node.as_deref() != Some(node) {
            continue;
        }
        let mut status = task.status.clone().unwrap_or_default();
        if status.state.is_terminal() {
            continue;
        }
        status.state = TaskState::Orphaned;
        status.message = format!("node {node} is down");
        status.last_transition_time = Some(Utc::now());
        match ctx.objects.update_status_of(task.as_ref(), &status).await {
            Ok(_) | Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
