//! Log pipelines for the agents: each node learns the LogPipelines whose node
//! selector takes its labels (and nothing else), and reports what they did. A report
//! becomes that node's entry in the pipeline's status (entries of nodes the pipeline
//! no longer selects go), the pipeline's `Ready` condition, and Events for what the
//! node says happened (an output failing or recovering, events dropped, a corrupt
//! chunk quarantined).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use shoal_api::meta::set_condition;
use shoal_api::{ConditionStatus, LogPipeline, PipelineNodeStatus};
use shoal_reconcile::EventRecorder;
use shoal_store::objects::{Follower, Item};
use shoal_store::{ObjectStore, Revision};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::pb;

/// What the table keeps of a LogPipeline.
#[derive(Clone, Debug, PartialEq)]
struct Stored {
    generation: i64,
    selector: BTreeMap<String, String>,
    spec_json: String,
}

#[derive(Default)]
struct Table {
    pipelines: HashMap<String, Stored>,
    /// node → its labels
    nodes: HashMap<String, BTreeMap<String, String>>,
    /// Which of the two kinds have been listed: until both are, no view is sent (an
    /// empty set would tell agents to stop their pipelines and remove their buffers).
    listed: (bool, bool),
}

impl Table {
    fn selects(&self, pipeline: &Stored, node: &str) -> bool {
        let labels = self.nodes.get(node);
        pipeline
            .selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }

    fn view(&self, node: &str) -> pb::PipelineSet {
        let mut pipelines: Vec<pb::NodePipeline> = self
            .pipelines
            .iter()
            .filter(|(_, p)| self.nodes.contains_key(node) && self.selects(p, node))
            .map(|(name, p)| pb::NodePipeline {
                name: name.clone(),
                generation: p.generation,
                spec_json: p.spec_json.clone(),
            })
            .collect();
        pipelines.sort_by(|a, b| a.name.cmp(&b.name));
        pb::PipelineSet { pipelines }
    }
}

pub struct PipelineTable {
    table: Mutex<Table>,
    generation: watch::Sender<u64>,
    objects: ObjectStore,
    events: EventRecorder,
}

fn stored_pipeline(bytes: &[u8]) -> Option<Stored> {
    let p: LogPipeline = serde_json::from_slice(bytes).ok()?;
    Some(Stored {
        generation: p.metadata.generation.unwrap_or(0),
        selector: p.spec.node_selector.clone(),
        spec_json: serde_json::to_string(&p.spec).ok()?,
    })
}

fn node_labels(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let n: shoal_api::Node = serde_json::from_slice(bytes).ok()?;
    Some(n.metadata.labels.into_iter().collect())
}

/// Follows one kind into one map of the table.
struct Into<T> {
    table: Arc<PipelineTable>,
    map: fn(&mut Table) -> &mut HashMap<String, T>,
    listed: fn(&mut Table) -> &mut bool,
}

impl<T: Send> Follower<Option<T>> for Into<T> {
    fn listed(&mut self, items: Vec<Item<Option<T>>>, _: Revision) {
        let (map, listed) = (self.map, self.listed);
        self.table.change(|t| {
            *map(t) = items
                .into_iter()
                .filter_map(|i| Some((i.name, i.value?)))
                .collect();
            *listed(t) = true;
        });
    }
    fn applied(&mut self, item: Item<Option<T>>) {
        let map = self.map;
        self.table.change(|t| match item.value {
            Some(v) => {
                map(t).insert(item.name, v);
            }
            None => {
                map(t).remove(&item.name);
            }
        });
    }
    fn deleted(&mut self, name: &str, _: Revision) {
        let map = self.map;
        self.table.change(|t| {
            map(t).remove(name);
        });
    }
}

impl PipelineTable {
    pub fn start(objects: ObjectStore, shutdown: CancellationToken) -> Arc<Self> {
        let (generation, _) = watch::channel(0);
        let table = Arc::new(PipelineTable {
            table: Mutex::new(Table::default()),
            generation,
            events: EventRecorder::new(objects.clone(), "log-pipelines"),
            objects: objects.clone(),
        });
        let mut pipelines = Into {
            table: table.clone(),
            map: |t| &mut t.pipelines,
            listed: |t| &mut t.listed.0,
        };
        let mut nodes = Into {
            table: table.clone(),
            map: |t| &mut t.nodes,
            listed: |t| &mut t.listed.1,
        };
        let (o1, o2, s1, s2) = (objects.clone(), objects, shutdown.clone(), shutdown.clone());
        tokio::spawn(async move {
            let kind = shoal_api::kind_of::<LogPipeline>();
            tokio::select! {
                _ = o1.follow_stored(kind, stored_pipeline, &mut pipelines) => {}
                _ = s1.cancelled() => {}
            }
        });
        tokio::spawn(async move {
            let kind = shoal_api::kind_of::<shoal_api::Node>();
            tokio::select! {
                _ = o2.follow_stored(kind, node_labels, &mut nodes) => {}
                _ = s2.cancelled() => {}
            }
        });
        table
    }

    fn change(&self, f: impl FnOnce(&mut Table)) {
        f(&mut self.table.lock().unwrap_or_else(|p| p.into_inner()));
        self.generation.send_modify(|g| *g += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node`'s pipelines now and whenever they change, until the receiver goes.
    pub fn subscribe(
        self: &Arc<Self>,
        node: &str,
    ) -> mpsc::Receiver<Result<pb::PipelineSet, tonic::Status>> {
        let (tx, rx) = mpsc::channel(1);
        let mut changed = self.generation.subscribe();
        let table = self.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            let mut last: Option<pb::PipelineSet> = None;
            loop {
                changed.mark_unchanged();
                let view = {
                    let t = table.lock();
                    (t.listed == (true, true)).then(|| t.view(&node))
                };
                if let Some(view) = view.filter(|v| last.as_ref() != Some(v)) {
                    if tx.send(Ok(view.clone())).await.is_err() {
                        return;
                    }
                    last = Some(view);
                }
                tokio::select! {
                    c = changed.changed() => if c.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }

    /// Writes `node`'s reports into its pipelines' status; one message per report
    /// that could not be written.
    pub async fn report(&self, node: &str, reports: Vec<pb::PipelineReport>) -> Vec<String> {
        let mut errors = Vec::new();
        for r in reports {
            let mut status: PipelineNodeStatus = match serde_json::from_str(&r.status_json) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{}: status: {e}", r.pipeline));
                    continue;
                }
            };
            status.node = node.to_string();
            let selected: BTreeSet<String> = {
                let t = self.lock();
                match t.pipelines.get(&r.pipeline) {
                    Some(p) => t
                        .nodes
                        .keys()
                        .filter(|n| t.selects(p, n))
                        .cloned()
                        .collect(),
                    None => continue,
                }
            };
            let written = self
                .objects
                .modify::<LogPipeline>(&r.pipeline, |p| {
                    merge(p, &status, &selected);
                    Ok(true)
                })
                .await;
            let pipeline = match written {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(format!("{}: {e}", r.pipeline));
                    continue;
                }
            };
            for e in r.events {
                let message = format!("on {node}: {}", e.message);
                if e.warning {
                    self.events.warning(&pipeline, &e.reason, &message).await;
                } else {
                    self.events.normal(&pipeline, &e.reason, &message).await;
                }
            }
        }
        errors
    }
}

/// `status` as `p`'s entry for its node, entries of nodes no longer selected gone,
/// and `Ready` saying whether every selected node runs the current spec and delivers.
fn merge(p: &mut LogPipeline, status: &PipelineNodeStatus, selected: &BTreeSet<String>) {
    let generation = p.metadata.generation.unwrap_or(0);
    let st = p.status.get_or_insert_with(Default::default);
    st.nodes
        .retain(|n| n.node != status.node && selected.contains(&n.node));
    st.nodes.push(status.clone());
    st.nodes.sort_by(|a, b| a.node.cmp(&b.node));
    st.observed_generation = Some(generation);
    let mut not_ready = Vec::new();
    for node in selected {
        match st.nodes.iter().find(|n| &n.node == node) {
            None => not_ready.push(format!("{node}: not reported yet")),
            Some(n) if n.generation != generation => {
                not_ready.push(format!("{node}: runs generation {}", n.generation))
            }
            Some(n) if n.state != "Running" => {
                not_ready.push(format!("{node}: {} ({})", n.state, n.message))
            }
            Some(n) => {
                for o in &n.outputs {
                    if let Some(why) = &o.failing {
                        not_ready.push(format!("{node}: output {} failing: {why}", o.name));
                    }
                }
            }
        }
    }
    let (state, reason, message) = if not_ready.is_empty() {
        (
            ConditionStatus::True,
            "Running",
            format!("running on {} node(s)", selected.len()),
        )
    } else {
        (ConditionStatus::False, "NotReady", not_ready.join("; "))
    };
    set_condition(
        &mut st.conditions,
        "Ready",
        state,
        reason,
        &message,
        Utc::now(),
    );
}
