//! Simulated nodes: they run no containers, but go through every state a real node
//! reports, through the real agent API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::{DesiredState, Task, TaskState, TaskStatus};

use crate::session::{Executor, Reporter};
use shoal_logs::glob;

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long a task takes from assigned to running.
    pub start_delay: Duration,
    /// Tasks whose image matches this glob fail right after starting.
    pub fail_images: Option<String>,
    /// How long a job (or cron) task runs before it completes.
    pub job_duration: Duration,
}

struct SimTask {
    uid: String,
    state: TaskState,
    generation: u64,
}

/// One simulated node's tasks.
pub struct SimExecutor {
    config: SimConfig,
    tasks: Arc<Mutex<HashMap<String, SimTask>>>,
    next_generation: Mutex<u64>,
}

impl SimExecutor {
    pub fn new(config: SimConfig) -> Self {
        SimExecutor {
            config,
            tasks: Arc::default(),
            next_generation: Mutex::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimTask>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn status(state: TaskState, message: &str, exit_code: Option<i32>, task: &Task) -> TaskStatus {
    TaskStatus {
        state,
        message: message.into(),
        exit_code,
        container_id: Some(format!(
            "sim-{}",
            task.metadata.uid.as_deref().unwrap_or(&task.metadata.name)
        )),
        ..Default::default()
    }
}

fn is_job(task: &Task) -> bool {
    matches!(
        task.metadata
            .labels
            .get(shoal_api::labels::MODE)
            .map(String::as_str),
        Some("job" | "cron")
    )
}

impl Executor for SimExecutor {
    fn upsert(&self, task: Arc<Task>, reporter: Reporter) {
        let name = task.metadata.name.clone();
        let uid = task.metadata.uid.clone().unwrap_or_default();
        let mut tasks = self.lock();
        let known = tasks.get(&name).filter(|t| t.uid == uid);
        if task.spec.desired_state == DesiredState::Shutdown {
            if let Some(t) = tasks.get_mut(&name).filter(|t| t.uid == uid) {
                if !t.state.is_terminal() {
                    t.state = TaskState::Shutdown;
                    t.generation += 1_000_000; // cancels a pending start
                    reporter.report(
                        &task,
                        &status(TaskState::Shutdown, "stopped", Some(0), &task),
                    );
                }
            } else if !task.status.as_ref().is_some_and(|s| s.state.is_terminal()) {
                reporter.report(
                    &task,
                    &status(TaskState::Shutdown, "never started", None, &task),
                );
            }
            return;
        }
        if known.is_some() {
            return; // Already running (or done); nothing new for a sim.
        }
        if task.status.as_ref().is_some_and(|s| s.state.is_terminal()) {
            return;
        }
        let generation = {
            let mut g = self
                .next_generation
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *g += 1;
            *g
        };
        tasks.insert(
            name.clone(),
            SimTask {
                uid: uid.clone(),
                state: TaskState::Starting,
                generation,
            },
        );
        drop(tasks);
        let config = self.config.clone();
        let tasks = self.tasks.clone();
        tokio::spawn(async move {
            tokio::time::sleep(config.start_delay).await;
            let still = |tasks: &Arc<Mutex<HashMap<String, SimTask>>>, to: TaskState| {
                let mut map = tasks.lock().unwrap_or_else(|p| p.into_inner());
                match map.get_mut(&name) {
                    Some(t)
                        if t.uid == uid && t.generation == generation && !t.state.is_terminal() =>
                    {
                        t.state = to;
                        true
                    }
                    _ => false,
                }
            };
            let fails = config
                .fail_images
                .as_deref()
                .is_some_and(|g| glob::matches(g, &task.spec.container.image));
            if fails {
                if still(&tasks, TaskState::Failed) {
                    reporter.report(
                        &task,
                        &status(
                            TaskState::Failed,
                            "simulated failure (--fail-images)",
                            Some(1),
                            &task,
                        ),
                    );
                }
                return;
            }
            if !still(&tasks, TaskState::Running) {
                return;
            }
            reporter.report(&task, &status(TaskState::Running, "started", None, &task));
            if is_job(&task) {
                tokio::time::sleep(config.job_duration).await;
                if still(&tasks, TaskState::Complete) {
                    reporter.report(
                        &task,
                        &status(TaskState::Complete, "finished", Some(0), &task),
                    );
                }
            }
        });
    }

    fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    fn resync(&self, names: &[String]) {
        self.lock().retain(|n, _| names.contains(n));
    }
}
