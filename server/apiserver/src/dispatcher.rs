//! The dispatcher (Swarm's name for it): one watch on all tasks, fanned out so that each
//! agent receives exactly the tasks bound to its node. A task moved to another node is
//! REMOVED from the old node's stream and ADDED to the new one's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use shoal_store::objects::{Follower, Item};
use shoal_store::{ObjectStore, Revision};
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

/// The fields the dispatcher needs, read without decoding the rest.
#[derive(serde::Deserialize)]
struct Bound {
    #[serde(default)]
    spec: BoundSpec,
    #[serde(default)]
    status: BoundStatus,
}

#[derive(serde::Deserialize, Default)]
struct BoundSpec {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    networks: Vec<shoal_api::NetworkRef>,
}

#[derive(serde::Deserialize, Default)]
struct BoundStatus {
    #[serde(default)]
    attachments: Vec<shoal_api::Attachment>,
}

impl Bound {
    /// Every network the task joins has given it an address: the node can wire it.
    fn is_addressed(&self) -> bool {
        shoal_api::all_attached(&self.spec.networks, &self.status.attachments)
    }
}

/// The node a stored task is bound to, and its JSON as stored (agents get it as is),
/// once it has its addresses: a task waiting for one is not sent to its node.
fn placement(stored: &[u8]) -> Option<(String, Arc<str>)> {
    let bound: Bound = serde_json::from_slice(stored).ok()?;
    if !bound.is_addressed() {
        return None;
    }
    let node = bound.spec.node.filter(|n| !n.is_empty())?;
    let json = std::str::from_utf8(stored).ok()?;
    Some((node, json.into()))
}

/// The dispatcher as the store's follower of tasks. Deletions need only the name, so
/// etcd is spared reading previous values.
struct Following(Arc<Dispatcher>);

type Stored = Option<(String, Arc<str>)>;

fn placed(item: Item<Stored>) -> (String, Option<Placed>) {
    let placed = item.value.map(|(node, json)| (node, json, item.revision));
    (item.name, placed)
}

impl Follower<Stored> for Following {
    fn listed(&mut self, items: Vec<Item<Stored>>, _revision: Revision) {
        let fresh: HashMap<String, Placed> = items
            .into_iter()
            .filter_map(|item| match placed(item) {
                (name, Some(p)) => Some((name, p)),
                (_, None) => None,
            })
            .collect();
        let mut state = self.0.lock();
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
        drop(state);
        self.0.synced.send_replace(true);
    }

    fn applied(&mut self, item: Item<Stored>) {
        let (name, placed) = placed(item);
        self.0.lock().apply(&name, placed);
    }

    fn deleted(&mut self, name: &str, _revision: Revision) {
        self.0.lock().apply(name, None);
    }
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
        let mut follower = Following(d.clone());
        tokio::spawn(async move {
            let kind = shoal_api::kind_of::<shoal_api::Task>();
            tokio::select! {
                _ = objects.follow_stored(kind, placement, &mut follower) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
