//! The dispatcher (Swarm's name for it): one watch on all tasks, fanned out so that each
//! agent receives exactly the tasks bound to its node. A task moved to another node is
//! REMOVED from the old node's stream and ADDED to the new one's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use shoal_store::objects::{kind_prefix, ObjectError};
use shoal_store::{EventType, KeyValue, ObjectStore, Revision, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::pb::{Assignment, AssignmentKind};

/// A slow agent is cut off (it reconnects and resyncs) rather than buffered forever.
const SUBSCRIBER_BUFFER: usize = 4096;

/// (node, task JSON as stored, its revision)
type Placed = (String, Arc<str>, Revision);

#[derive(Default)]
struct State {
    /// task name → where it is bound and what it is
    tasks: HashMap<String, Placed>,
    by_node: HashMap<String, HashSet<String>>,
    subscribers: HashMap<String, Vec<mpsc::Sender<Assignment>>>,
}

pub struct Dispatcher {
    state: Mutex<State>,
    synced: watch::Sender<bool>,
}

/// The one field the dispatcher needs, read without decoding the rest.
#[derive(serde::Deserialize)]
struct Bound {
    #[serde(default)]
    spec: BoundSpec,
}

#[derive(serde::Deserialize, Default)]
struct BoundSpec {
    #[serde(default)]
    node: Option<String>,
}

/// The node a stored task is bound to, and its JSON as stored (agents get it as is).
fn placement(kv: &KeyValue) -> Option<(String, Arc<str>)> {
    let bound: Bound = serde_json::from_slice(&kv.value).ok()?;
    let node = bound.spec.node.filter(|n| !n.is_empty())?;
    let json = std::str::from_utf8(&kv.value).ok()?;
    Some((node, json.into()))
}

fn message(kind: AssignmentKind, json: &Arc<str>) -> Assignment {
    Assignment {
        kind: kind.into(),
        task_json: json.to_string(),
    }
}

impl State {
    fn send(&mut self, node: &str, msg: Assignment) {
        if let Some(subs) = self.subscribers.get_mut(node) {
            subs.retain(|s| s.try_send(msg.clone()).is_ok());
        }
    }

    /// Records the task's new placement (None: gone) and tells the nodes concerned.
    fn apply(&mut self, name: &str, new: Option<Placed>) {
        let old = self.tasks.remove(name);
        if let Some((old_node, old_json, _)) = &old {
            let moved = new.as_ref().is_none_or(|(n, _, _)| n != old_node);
            if moved {
                if let Some(set) = self.by_node.get_mut(old_node) {
                    set.remove(name);
                }
                self.send(old_node, message(AssignmentKind::Removed, old_json));
            }
        }
        if let Some((node, json, rev)) = new {
            let kind = match &old {
                Some((old_node, _, _)) if *old_node == node => AssignmentKind::Modified,
                _ => AssignmentKind::Added,
            };
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(name.to_string());
            self.send(&node, message(kind, &json));
            self.tasks.insert(name.to_string(), (node, json, rev));
        }
    }
}

impl Dispatcher {
    pub fn start(objects: ObjectStore, shutdown: CancellationToken) -> Arc<Self> {
        let (synced, _) = watch::channel(false);
        let d = Arc::new(Dispatcher {
            state: Mutex::new(State::default()),
            synced,
        });
        let this = d.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let r = tokio::select! {
                    r = this.follow(&objects) => r,
                    _ = shutdown.cancelled() => return,
                };
                match r {
                    Err(ObjectError::Store(StoreError::Compacted { .. })) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "dispatcher watch failed; relisting");
                        tokio::time::sleep(Duration::from_millis(100 * (1 << failures.min(6))))
                            .await;
                    }
                    Ok(()) => {}
                }
            }
        });
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn follow(&self, objects: &ObjectStore) -> Result<(), ObjectError> {
        let prefix = kind_prefix(shoal_api::kind_of::<shoal_api::Task>());
        let store = objects.raw();
        let list = store.list(&prefix).await?;
        {
            let mut state = self.lock();
            let mut fresh: HashMap<String, Placed> = HashMap::new();
            for kv in &list.items {
                if let Some((node, json)) = placement(kv) {
                    let name = kv.key.trim_start_matches(&prefix).to_string();
                    fresh.insert(name, (node, json, kv.mod_revision));
                }
            }
            let gone: Vec<String> = state
                .tasks
                .keys()
                .filter(|n| !fresh.contains_key(*n))
                .cloned()
                .collect();
            for name in gone {
                state.apply(&name, None);
            }
            for (name, placed) in fresh {
                let unchanged = state
                    .tasks
                    .get(&name)
                    .is_some_and(|(n, j, _)| *n == placed.0 && *j == placed.1);
                if !unchanged {
                    state.apply(&name, Some(placed));
                }
            }
        }
        self.synced.send_replace(true);
        // Deletions need only the name, so etcd is spared reading previous values.
        let mut changes = store.watch_without_prev(&prefix, list.revision + 1).await?;
        while let Some(ev) = changes.next().await {
            let ev = ev?;
            let name = ev.kv.key.trim_start_matches(&prefix);
            let placed = match ev.event_type {
                EventType::Delete => None,
                EventType::Put => {
                    placement(&ev.kv).map(|(node, json)| (node, json, ev.kv.mod_revision))
                }
            };
            self.lock().apply(name, placed);
        }
        Err(ObjectError::Store(StoreError::Unavailable(
            "task watch ended".into(),
        )))
    }

    /// The last stored JSON seen of a task bound to a node, and its revision.
    pub fn task_json(&self, name: &str) -> Option<(Arc<str>, Revision)> {
        self.lock()
            .tasks
            .get(name)
            .map(|(_, json, rev)| (json.clone(), *rev))
    }

    /// The node's current tasks as ADDED, then SYNCED, then every change.
    pub async fn subscribe(&self, node: &str) -> mpsc::Receiver<Assignment> {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut state = self.lock();
        let names: Vec<String> = state
            .by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for name in names {
            if let Some((_, json, _)) = state.tasks.get(&name) {
                let _ = tx.try_send(message(AssignmentKind::Added, json));
            }
        }
        let _ = tx.try_send(Assignment {
            kind: AssignmentKind::Synced.into(),
            task_json: String::new(),
        });
        state
            .subscribers
            .entry(node.to_string())
            .or_default()
            .push(tx);
        rx
    }
}
