//! Supervision of one task's container: start (or adopt) it, report it running, check
//! its health, restart it in place when its policy says, stop it when asked, and
//! report how it ended. Everything it asks of the container goes through
//! [`ContainerRuntime`], so it is tested against a fake on paused time.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::{Health, Task, TaskState};
use tokio_util::sync::CancellationToken;

use super::config::container_id;
use super::health::{Probe, Verdict};
use super::restart::restart_delay;
use super::runtime::ContainerRuntime;
use super::status;
use super::stop::{stop_container, stop_grace};
use crate::session::Reporter;

/// How often a running container's exit is looked for.
const POLL: Duration = Duration::from_millis(100);

/// The task as last assigned: a task keeps its uid (and container) when the service
/// controller moves it to a history name, so reports follow its current name.
pub(super) type Current = Arc<Mutex<Arc<Task>>>;

pub(super) fn current(c: &Current) -> Arc<Task> {
    c.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What a supervisor works with.
pub(super) struct Supervisor<'a> {
    pub rt: &'a dyn ContainerRuntime,
    /// The node's stop grace period (a stop may ask for its own).
    pub node_grace: Duration,
    pub task: &'a Current,
    pub reporter: &'a Reporter,
    /// The container's directory (bundle, logs, exit).
    pub dir: &'a Path,
}

impl Supervisor<'_> {
    fn report(&self, s: &shoal_api::TaskStatus) {
        self.reporter.report(&current(self.task), s);
    }

    /// Runs the task's container until it ends or `stop` is cancelled, reporting every
    /// step. `again`: run an ended container once more (`shoal start`).
    pub(super) async fn supervise(&self, stop: CancellationToken, again: bool) {
        let rt = self.rt;
        let first = current(self.task);
        let id = container_id(&first);
        let adopted = self.dir.join("config.json").is_file();
        // The address and published ports first: a port already taken refuses the task
        // before anything runs. An adopted container keeps the address it had.
        // `_hold` keeps the published ports open until supervision ends.
        let (addresses, _hold) = match rt.attach(&first, &id, adopted).await {
            Ok(a) => (a.addresses, a.hold),
            Err(why) => return self.report(&status(TaskState::Rejected, why, None)),
        };
        if again && adopted {
            self.report(&status(TaskState::Starting, "starting again", Some(&id)));
            if let Err(why) = rt.restart(&first, self.dir, &id).await {
                return self.report(&status(TaskState::Failed, why, Some(&id)));
            }
        } else if adopted {
            // Started by an earlier agent: its monitor kept it (or its exit code).
            if !rt.exists(&id).await && rt.exit(self.dir).is_none() {
                let why = "the container was lost while the agent was away";
                return self.report(&status(TaskState::Failed, why, Some(&id)));
            }
            tracing::info!(container = %id, task = %first.metadata.name, "adopted a running container");
        } else if let Err(why) = rt
            .run(&first, self.reporter, self.dir, &id, &addresses)
            .await
        {
            return self.report(&status(TaskState::Rejected, why, None));
        }
        let mut restarts = 0u32;
        loop {
            let mut probe = first
                .spec
                .container
                .healthcheck
                .clone()
                .map(|c| Probe::new(c, tokio::time::Instant::now()));
            let running = |health: Option<Health>| {
                let mut s = status(TaskState::Running, "running", Some(&id));
                s.health = health;
                s.restart_count = restarts;
                s.addresses = addresses.clone();
                s
            };
            self.report(&running(probe.as_ref().map(|p| p.health)));
            let exit = loop {
                if let Some(exit) = rt.exit(self.dir) {
                    break exit;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => {
                        let grace = stop_grace(self.node_grace, &current(self.task));
                        let exit = stop_container(rt, self.dir, &id, grace).await;
                        let mut s = status(TaskState::Shutdown, "stopped", Some(&id));
                        s.exit_code = exit.map(|e| e.exit_code);
                        s.restart_count = restarts;
                        return self.report(&s);
                    }
                }
                let Some(probe) = probe.as_mut().filter(|p| p.due()) else {
                    continue;
                };
                let result = rt.exec(&id, &probe.check.cmd, probe.check.timeout.0).await;
                match probe.record(result) {
                    Verdict::Same => {}
                    Verdict::Healthy => self.report(&running(Some(Health::Healthy))),
                    Verdict::Unhealthy(why) => {
                        // Unhealthy: the task fails and its service replaces it.
                        let grace = stop_grace(self.node_grace, &current(self.task));
                        let exit = stop_container(rt, self.dir, &id, grace).await;
                        let mut s = status(TaskState::Failed, why, Some(&id));
                        s.health = Some(Health::Unhealthy);
                        s.exit_code = exit.map(|e| e.exit_code);
                        s.restart_count = restarts;
                        return self.report(&s);
                    }
                }
            };
            if let Some(delay) = restart_delay(&current(self.task), exit.exit_code, restarts) {
                restarts += 1;
                let mut s = status(
                    TaskState::Starting,
                    format!(
                        "exited with code {}; restart {restarts} in {}",
                        exit.exit_code,
                        shoal_api::quantity::Duration(delay)
                    ),
                    Some(&id),
                );
                s.exit_code = Some(exit.exit_code);
                s.restart_count = restarts;
                self.report(&s);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {
                        let mut s = status(TaskState::Shutdown, "stopped", Some(&id));
                        s.exit_code = Some(exit.exit_code);
                        s.restart_count = restarts;
                        return self.report(&s);
                    }
                }
                if let Err(why) = rt.restart(&current(self.task), self.dir, &id).await {
                    let mut s = status(TaskState::Failed, format!("restarting: {why}"), Some(&id));
                    s.restart_count = restarts;
                    return self.report(&s);
                }
                continue;
            }
            let mut s = if exit.exit_code == 0 {
                status(TaskState::Complete, "exited with code 0", Some(&id))
            } else {
                status(
                    TaskState::Failed,
                    format!("exited with code {}", exit.exit_code),
                    Some(&id),
                )
            };
            s.exit_code = Some(exit.exit_code);
            s.restart_count = restarts;
            return self.report(&s);
        }
    }
}
