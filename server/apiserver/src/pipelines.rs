//! Log pipelines for the agents: each node learns the LogPipelines whose node
//! selector takes its labels (and nothing else), and reports what they did. A report
//! becomes that node's entry in the pipeline's status (entries of nodes the pipeline
//! no longer selects go), the pipeline's `Ready` condition, and Events for what the
//! node says happened (an output failing or recovering, events dropped, a corrupt
//! chunk quarantined).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Utc;
use shoal_api::meta::set_condition;
use shoal_api::{ConditionStatus, LogPipeline, PipelineNodeStatus};
use shoal_reconcile::EventRecorder;
use shoal_store::ObjectStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::followed::Followed;
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
    table: Arc<Followed<Table>>,
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

impl PipelineTable {
    pub fn start(objects: ObjectStore, shutdown: CancellationToken) -> Arc<Self> {
        let table: Arc<Followed<Table>> = Followed::new();
        table.follow::<LogPipeline, _>(
            objects.clone(),
            stored_pipeline,
            |t| &mut t.pipelines,
            shutdown.clone(),
        );
        table.follow::<shoal_api::Node, _>(
            objects.clone(),
            node_labels,
            |t| &mut t.nodes,
            shutdown,
        );
        Arc::new(PipelineTable {
            table,
            events: EventRecorder::new(objects.clone(), "log-pipelines"),
            objects,
        })
    }

    /// `node`'s pipelines now and whenever they change, until the receiver goes.
    /// Nothing is sent before LogPipelines and Nodes are both listed: an empty set
    /// would tell the agent to stop its pipelines and remove their buffers.
    pub fn subscribe(&self, node: &str) -> mpsc::Receiver<Result<pb::PipelineSet, tonic::Status>> {
        let node = node.to_string();
        self.table
            .subscribe(move |t| t.all_listed().then(|| t.lock().view(&node)))
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
                let t = self.table.lock();
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
