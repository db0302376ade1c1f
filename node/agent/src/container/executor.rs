//! The real executor: each task assigned to the node becomes a container run by an OCI
//! runtime (runc by default) under a `shoal-monitor` process of its own. This file is
//! the table of containers by task uid; `supervise.rs` runs each one, through the
//! runtime trait (`runtime.rs`, real in `runc.rs`).
//!
//! A task goes preparing (image pulled if missing, with progress in the message) →
//! starting (overlay rootfs, runtime spec, monitor) → running → complete or failed with
//! its exit code. `desiredState: shutdown` sends SIGTERM, then SIGKILL after the grace
//! period, and reports `shutdown`. A task that is no longer the node's is stopped and
//! its container, writable layer and logs removed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use shoal_api::{DesiredState, Task, TaskState, START_ANNOTATION};
use shoal_pipeline::tasks_in::TaskLog;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::{container_id, RuncConfig};
use super::runc::Runc;
use super::runtime::ContainerRuntime;
use super::status;
use super::stop::remove_container;
use super::supervise::{current, Current, Supervisor};
use crate::session::{Executor, Reporter};

struct Entry {
    task: Current,
    /// Cancelled to stop the container.
    stop: CancellationToken,
    /// Cancelled to also remove it once stopped.
    remove: CancellationToken,
    /// Set once the container has ended and nothing watches it any more.
    ended: Arc<AtomicBool>,
    /// The `shoal start` request the container last ran for.
    started_for: Option<String>,
}

fn start_request(task: &Task) -> Option<String> {
    task.metadata.annotations.get(START_ANNOTATION).cloned()
}

/// Containers by task uid.
pub struct RuncExecutor {
    config: Arc<RuncConfig>,
    rt: Arc<dyn ContainerRuntime>,
    containers: Arc<Mutex<HashMap<String, Entry>>>,
    /// The logs of the node's containers, for log pipelines' `tasks` inputs.
    logs: watch::Sender<Vec<TaskLog>>,
}

impl RuncExecutor {
    pub fn new(config: RuncConfig) -> Self {
        let config = Arc::new(config);
        RuncExecutor {
            rt: Arc::new(Runc {
                config: config.clone(),
            }),
            config,
            containers: Arc::default(),
            logs: watch::channel(Vec::new()).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says which containers' logs there are now: every known task's, until it is
    /// removed (an ended task's output may still be on its way).
    fn publish_logs(&self, containers: &HashMap<String, Entry>) {
        let mut logs: Vec<TaskLog> = containers
            .values()
            .map(|e| {
                let task = current(&e.task);
                TaskLog {
                    service: task
                        .metadata
                        .labels
                        .get(shoal_api::labels::SERVICE)
                        .cloned()
                        .unwrap_or_default(),
                    task: task.metadata.name.clone(),
                    labels: task.metadata.labels.clone().into_iter().collect(),
                    dir: self.config.container_dir(&task),
                    container: container_id(&task),
                }
            })
            .collect();
        logs.sort_by(|a, b| a.container.cmp(&b.container));
        self.logs.send_if_modified(|now| {
            let changed = *now != logs;
            *now = logs;
            changed
        });
    }

    pub fn runtime_root(data_dir: &std::path::Path) -> PathBuf {
        RuncConfig::runtime_root(data_dir)
    }
}

/// Whether the server gave the task up: its node was declared down and the task
/// `orphaned`, to be replaced elsewhere (a container of it here is a second copy).
fn given_up(task: &Task) -> bool {
    task.status
        .as_ref()
        .is_some_and(|s| s.state == TaskState::Orphaned)
}

/// Runs one task's container with this node's settings (see [`Supervisor`]).
async fn supervise(
    rt: &dyn ContainerRuntime,
    config: &RuncConfig,
    task: &Current,
    reporter: &Reporter,
    dir: &std::path::Path,
    stop: CancellationToken,
    again: bool,
) {
    Supervisor {
        rt,
        node_grace: config.stop_grace,
        task,
        reporter,
        dir,
    }
    .supervise(stop, again)
    .await
}

impl Executor for RuncExecutor {
    fn upsert(&self, task: Arc<Task>, reporter: Reporter) {
        let uid = task
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| task.metadata.name.clone());
        let mut containers = self.lock();
        if let Some(e) = containers.get_mut(&uid) {
            *e.task.lock().unwrap_or_else(|p| p.into_inner()) = task.clone();
            if task.spec.desired_state == DesiredState::Shutdown || given_up(&task) {
                e.stop.cancel();
                return;
            }
            // `shoal start` of an ended task: the same container runs again.
            let asked = start_request(&task);
            if e.ended.load(Ordering::SeqCst) && asked.is_some() && asked != e.started_for {
                e.started_for = asked;
                e.stop = CancellationToken::new();
                e.ended = Arc::new(AtomicBool::new(false));
                let (stop, ended, task) = (e.stop.clone(), e.ended.clone(), e.task.clone());
                let (rt, config) = (self.rt.clone(), self.config.clone());
                tokio::spawn(async move {
                    let dir = config.container_dir(&current(&task));
                    supervise(&*rt, &config, &task, &reporter, &dir, stop, true).await;
                    ended.store(true, Ordering::SeqCst);
                });
            }
            return;
        }
        let terminal = task.status.as_ref().is_some_and(|s| s.state.is_terminal());
        let entry = Entry {
            started_for: start_request(&task),
            task: Arc::new(Mutex::new(task.clone())),
            stop: CancellationToken::new(),
            remove: CancellationToken::new(),
            ended: Arc::new(AtomicBool::new(false)),
        };
        // An ended or stopped task is known (`shoal start` may run it again, removal
        // cleans it up) but not started. One asked to stop while the agent was away is
        // adopted only to be stopped.
        let stopping = task.spec.desired_state == DesiredState::Shutdown;
        let on_disk = self
            .config
            .container_dir(&task)
            .join("config.json")
            .is_file();
        // A task the server gave up on while this node was cut off runs elsewhere
        // now: its container here is adopted only to be stopped.
        let given_up = given_up(&task);
        let run_now = (!terminal && (!stopping || on_disk)) || (given_up && on_disk);
        if given_up {
            entry.stop.cancel();
        }
        if stopping {
            entry.stop.cancel();
            if !terminal && !on_disk {
                // Stopped before it ever ran here: say so, or nothing would end it.
                reporter.report(&task, &status(TaskState::Shutdown, "never started", None));
            }
        }
        let (stop, remove, ended, task) = (
            entry.stop.clone(),
            entry.remove.clone(),
            entry.ended.clone(),
            entry.task.clone(),
        );
        containers.insert(uid, entry);
        self.publish_logs(&containers);
        let (rt, config) = (self.rt.clone(), self.config.clone());
        tokio::spawn(async move {
            let dir = config.container_dir(&current(&task));
            if run_now {
                supervise(&*rt, &config, &task, &reporter, &dir, stop, false).await;
            }
            ended.store(true, Ordering::SeqCst);
            remove.cancelled().await;
            let id = container_id(&current(&task));
            remove_container(&*rt, &id, &dir, config.stop_grace).await;
        });
    }

    fn remove(&self, name: &str) {
        let mut containers = self.lock();
        let uid = containers
            .iter()
            .find(|(_, e)| current(&e.task).metadata.name == name)
            .map(|(uid, _)| uid.clone());
        if let Some(e) = uid.and_then(|uid| containers.remove(&uid)) {
            e.stop.cancel();
            e.remove.cancel();
            self.publish_logs(&containers);
        }
    }

    fn task_logs(&self) -> Option<watch::Receiver<Vec<TaskLog>>> {
        Some(self.logs.subscribe())
    }

    fn overlay(&self) -> Option<Arc<super::overlay::Overlay>> {
        self.config.overlay.clone()
    }

    fn fence(&self) {
        let containers = self.lock();
        for e in containers.values() {
            e.stop.cancel();
        }
        tracing::warn!(
            tasks = containers.len(),
            "cut off from every server past the heartbeat window: stopped this node's tasks (they run elsewhere now)"
        );
    }

    fn resync(&self, names: &[String]) {
        let gone: Vec<String> = self
            .lock()
            .values()
            .map(|e| current(&e.task).metadata.name.clone())
            .filter(|n| !names.contains(n))
            .collect();
        for name in gone {
            self.remove(&name);
        }
        // Containers on disk that no assigned task claims (their tasks went while the
        // agent was away) are stopped and removed.
        let known: Vec<String> = self
            .lock()
            .keys()
            .map(|uid| format!("shoal-{uid}"))
            .collect();
        let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("containers")) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            if id.starts_with("shoal-") && !known.contains(&id) {
                let (rt, grace) = (self.rt.clone(), self.config.stop_grace);
                let path = entry.path();
                tokio::spawn(async move { remove_container(&*rt, &id, &path, grace).await });
            }
        }
    }
}
