//! The node's log pipelines: the server says which LogPipelines select this node
//! (the whole set on every change); each runs here, in the agent's process, started
//! again when its generation moves and stopped when it leaves the set. Every few
//! seconds each one's status and its outputs' health changes go back to the server.
//!
//! A pipeline that cannot start (a port in use, say) is reported `Failed` with the
//! reason and tried again at the next report. Buffers and positions live under the
//! agent's data directory, so a restarted agent carries on where the last one was;
//! a pipeline removed from the set has its directory removed too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use shoal_api::{LogPipelineSpec, PipelineNodeStatus};
use shoal_pipeline::build::{start, Place};
use shoal_pipeline::running::Running;
use shoal_pipeline::tasks_in::TaskLog;
use shoal_wire::pb::{self, agent_client::AgentClient};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How often statuses go to the server.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Where the node's pipelines keep their state.
#[derive(Debug, Clone)]
pub struct PipelineDirs {
    /// Buffers (file) and positions, by pipeline name.
    pub data: PathBuf,
    /// Memory buffers (a tmpfs), by pipeline name.
    pub memory: PathBuf,
}

struct Wanted {
    generation: i64,
    spec: LogPipelineSpec,
}

enum State {
    Running(Running),
    Failed(String),
}

struct Pipelines {
    node: String,
    dirs: PipelineDirs,
    tasks: watch::Receiver<Vec<TaskLog>>,
    wanted: HashMap<String, Wanted>,
    /// name → (generation, state)
    have: HashMap<String, (i64, State)>,
}

impl Pipelines {
    /// Starts what is wanted and not running (or failed), stops what is not wanted.
    async fn converge(&mut self) {
        let gone: Vec<String> = self
            .have
            .keys()
            .filter(|n| !self.wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((_, State::Running(r))) = self.have.remove(&name) {
                r.stop();
            }
            tracing::info!(pipeline = %name, "log pipeline removed");
            for dir in [&self.dirs.data, &self.dirs.memory] {
                let _ = std::fs::remove_dir_all(dir.join(&name));
            }
        }
        for (name, want) in &self.wanted {
            let current = match self.have.get(name) {
                Some((g, State::Running(_))) if *g == want.generation => continue,
                other => other.map(|(g, _)| *g),
            };
            if let Some((_, State::Running(r))) = self.have.remove(name) {
                r.stop();
            }
            let place = Place {
                node: self.node.clone(),
                dir: self.dirs.data.join(name),
                memory_dir: self.dirs.memory.join(name),
                tasks: self.tasks.clone(),
            };
            // A pipeline started again may find its old listeners still closing.
            let mut tries = 0;
            let state = loop {
                tries += 1;
                match start(name, want.generation, &want.spec, place.clone()).await {
                    Ok(r) => break State::Running(r),
                    Err(e) if tries < 5 && current.is_some() => {
                        tracing::debug!(pipeline = %name, error = %e, "starting again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => break State::Failed(e.to_string()),
                }
            };
            match &state {
                State::Running(_) => {
                    tracing::info!(pipeline = %name, generation = want.generation, "log pipeline running")
                }
                State::Failed(why) => {
                    tracing::warn!(pipeline = %name, error = %why, "log pipeline cannot start")
                }
            }
            self.have.insert(name.clone(), (want.generation, state));
        }
    }

    fn reports(&self) -> Vec<pb::PipelineReport> {
        self.have
            .iter()
            .map(|(name, (generation, state))| {
                let (status, events) = match state {
                    State::Running(r) => (r.status(&self.node), r.take_events()),
                    State::Failed(why) => (
                        PipelineNodeStatus {
                            node: self.node.clone(),
                            generation: *generation,
                            state: "Failed".into(),
                            message: why.clone(),
                            reported: Some(chrono::Utc::now()),
                            ..Default::default()
                        },
                        Vec::new(),
                    ),
                };
                pb::PipelineReport {
                    pipeline: name.clone(),
                    status_json: serde_json::to_string(&status).unwrap_or_default(),
                    events: events
                        .into_iter()
                        .map(|e| pb::PipelineEvent {
                            warning: e.warning,
                            reason: e.reason.to_string(),
                            message: e.message,
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// Runs the node's pipelines as the server says until `shutdown`.
pub async fn run_pipelines(
    client: AgentClient<Channel>,
    node: String,
    dirs: PipelineDirs,
    tasks: watch::Receiver<Vec<TaskLog>>,
    shutdown: CancellationToken,
) {
    let (sets_tx, mut sets) = watch::channel(None::<pb::PipelineSet>);
    tokio::spawn(follow_sets(
        client.clone(),
        node.clone(),
        sets_tx,
        shutdown.clone(),
    ));
    let mut p = Pipelines {
        node: node.clone(),
        dirs,
        tasks,
        wanted: HashMap::new(),
        have: HashMap::new(),
    };
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = sets.changed() => {
                if changed.is_err() {
                    break;
                }
                let set = sets.borrow_and_update().clone();
                let Some(set) = set else { continue };
                p.wanted = wanted(set);
                p.converge().await;
            }
            _ = tick.tick() => {
                // Failed ones are tried again.
                p.converge().await;
                let reports = p.reports();
                if !reports.is_empty() {
                    let sent = client
                        .clone()
                        .report_pipelines(pb::ReportPipelinesRequest {
                            node: node.clone(),
                            reports,
                        })
                        .await;
                    if let Err(e) = sent {
                        tracing::debug!(error = %e.message(), "pipeline report not sent");
                    }
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    for (_, (_, state)) in p.have.drain() {
        if let State::Running(r) = state {
            r.stop();
        }
    }
}

/// The set as specs; one that does not decode (a newer server) is skipped, logged.
fn wanted(set: pb::PipelineSet) -> HashMap<String, Wanted> {
    set.pipelines
        .into_iter()
        .filter_map(|p| match serde_json::from_str(&p.spec_json) {
            Ok(spec) => Some((
                p.name,
                Wanted {
                    generation: p.generation,
                    spec,
                },
            )),
            Err(e) => {
                tracing::warn!(pipeline = %p.name, error = %e, "cannot read the pipeline's spec");
                None
            }
        })
        .collect()
}

/// Keeps the latest pipeline set from the server in `tx`, reconnecting as needed.
async fn follow_sets(
    client: AgentClient<Channel>,
    node: String,
    tx: watch::Sender<Option<pb::PipelineSet>>,
    shutdown: CancellationToken,
) {
    let open = |client: AgentClient<Channel>, node: String| async move {
        client
            .clone()
            .pipelines(pb::PipelinesRequest { node })
            .await
    };
    let keep = |set| {
        let _ = tx.send(Some(set));
    };
    crate::session::follow_stream(client, node, "pipelines", open, keep, shutdown).await
}
