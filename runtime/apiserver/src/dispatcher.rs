//! The dispatcher (Swarm's name for it): one watch on all tasks, fanned out so that each
//! agent receives exactly the tasks bound to its node. A task moved to another node is
//! REMOVED from the old node's stream and ADDED to the new one's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use shoal_api::DynamicObject;
use shoal_store::objects::{ChangeType, ObjectError};
use shoal_store::{ObjectStore, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::pb::Assignment;

/// A slow agent is cut off (it reconnects and resyncs) rather than buffered forever.
const SUBSCRIBER_BUFFER: usize = 4096;

#[derive(Default)]
struct State {
    /// task name → (node, task JSON)
    tasks: HashMap<String, (String, Arc<str>)>,
    by_node: HashMap<String, HashSet<String>>,
    subscribers: HashMap<String, Vec<mpsc::Sender<Assignment>>>,
}

pub struct Dispatcher {
    state: Mutex<State>,
    synced: watch::Sender<bool>,
}

fn node_of(obj: &DynamicObject) -> Option<String> {
    obj.body
        .get("spec")
        .and_then(|s| s.get("node"))
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

fn message(kind: &str, json: &Arc<str>) -> Assignment {
    Assignment {
        r#type: kind.into(),
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
    fn apply(&mut self, name: &str, new: Option<(String, Arc<str>)>) {
        let old = self.tasks.remove(name);
        if let Some((old_node, old_json)) = &old {
            let moved = new.as_ref().is_none_or(|(n, _)| n != old_node);
            if moved {
                if let Some(set) = self.by_node.get_mut(old_node) {
                    set.remove(name);
                }
                self.send(old_node, message("REMOVED", old_json));
            }
        }
        if let Some((node, json)) = new {
            let kind = match &old {
                Some((old_node, _)) if *old_node == node => "MODIFIED",
                _ => "ADDED",
            };
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(name.to_string());
            self.send(&node, message(kind, &json));
            self.tasks.insert(name.to_string(), (node, json));
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
        let kind = shoal_api::kind_of::<shoal_api::Task>();
        let (items, revision) = objects.list(kind).await?;
        {
            let mut state = self.lock();
            let mut fresh: HashMap<String, (String, Arc<str>)> = HashMap::new();
            for obj in &items {
                if let Some(node) = node_of(obj) {
                    let json: Arc<str> = serde_json::to_string(obj).unwrap_or_default().into();
                    fresh.insert(obj.metadata.name.clone(), (node, json));
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
                    .is_some_and(|(n, j)| *n == placed.0 && *j == placed.1);
                if !unchanged {
                    state.apply(&name, Some(placed));
                }
            }
        }
        self.synced.send_replace(true);
        let mut changes = objects.watch(kind, revision + 1).await?;
        while let Some(ev) = changes.next().await {
            let ev = ev?;
            let name = ev.object.metadata.name.clone();
            let placed = match ev.change {
                ChangeType::Deleted => None,
                _ => node_of(&ev.object).map(|node| {
                    let json: Arc<str> =
                        serde_json::to_string(&ev.object).unwrap_or_default().into();
                    (node, json)
                }),
            };
            self.lock().apply(&name, placed);
        }
        Err(ObjectError::Store(StoreError::Unavailable(
            "task watch ended".into(),
        )))
    }

    /// The last JSON seen of a task bound to a node (with its resourceVersion).
    pub fn task_json(&self, name: &str) -> Option<Arc<str>> {
        self.lock().tasks.get(name).map(|(_, json)| json.clone())
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
            if let Some((_, json)) = state.tasks.get(&name) {
                let _ = tx.try_send(message("ADDED", json));
            }
        }
        let _ = tx.try_send(Assignment {
            r#type: "SYNCED".into(),
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
