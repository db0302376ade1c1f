//! The real executor: each task assigned to the node becomes a container run by an OCI
//! runtime (runc by default) under a `shoal-monitor` process of its own.
//!
//! A task goes preparing (image pulled if missing, with progress in the message) →
//! starting (overlay rootfs, runtime spec, monitor) → running → complete or failed with
//! its exit code. `desiredState: shutdown` sends SIGTERM, then SIGKILL after the grace
//! period, and reports `shutdown`. A task that is no longer the node's is stopped and
//! its container, writable layer and logs removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::{
    DesiredState, Health, HealthCheck, RestartCondition, Task, TaskState, TaskStatus,
    START_ANNOTATION,
};
use tokio_util::sync::CancellationToken;

use super::network::Network;
use super::ports::PortTable;
use super::rootfs::{Overlay, RootfsLayout};
use super::start::{network, relaunch, start};
use crate::image::PullOptions;
use crate::session::{Executor, Reporter};
use shoal_monitor::Exit;

#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// Images in `<data_dir>/images`, containers in `<data_dir>/containers`.
    pub data_dir: PathBuf,
    /// The OCI runtime binary.
    pub runtime: String,
    /// The `shoal-monitor` program, one process per container.
    pub monitor_exe: PathBuf,
    pub pull: PullOptions,
    pub stop_grace: Duration,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The node network containers join; None: each gets an empty namespace.
    pub network: Option<Network>,
    /// The ports this node publishes.
    pub ports: PortTable,
}

/// The task as last assigned: a task keeps its uid (and container) when the service
/// controller moves it to a history name, so reports follow its current name.
type Current = Arc<Mutex<Arc<Task>>>;

fn current(c: &Current) -> Arc<Task> {
    c.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

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
    containers: Arc<Mutex<HashMap<String, Entry>>>,
}

impl RuncExecutor {
    pub fn new(config: RuncConfig) -> Self {
        RuncExecutor {
            config: Arc::new(config),
            containers: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn runtime_root(data_dir: &Path) -> PathBuf {
        data_dir.join("runtime")
    }
}

/// The runtime's id for a task's container (stable across agent restarts).
pub fn container_id(task: &Task) -> String {
    format!(
        "shoal-{}",
        task.metadata.uid.as_deref().unwrap_or(&task.metadata.name)
    )
}

pub(super) fn status(state: TaskState, message: impl Into<String>, id: Option<&str>) -> TaskStatus {
    TaskStatus {
        state,
        message: message.into(),
        container_id: id.map(str::to_string),
        ..Default::default()
    }
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
            if task.spec.desired_state == DesiredState::Shutdown {
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
                let config = self.config.clone();
                tokio::spawn(async move {
                    supervise(&config, &task, &reporter, stop, true).await;
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
        let on_disk = container_dir(&self.config, &task)
            .join("config.json")
            .is_file();
        let run_now = !terminal && (!stopping || on_disk);
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
        let config = self.config.clone();
        tokio::spawn(async move {
            if run_now {
                supervise(&config, &task, &reporter, stop, false).await;
            }
            ended.store(true, Ordering::SeqCst);
            remove.cancelled().await;
            let task = current(&task);
            cleanup(
                &config,
                &container_id(&task),
                &container_dir(&config, &task),
            )
            .await;
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
        }
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
                let config = self.config.clone();
                let path = entry.path();
                tokio::spawn(async move { cleanup(&config, &id, &path).await });
            }
        }
    }
}

pub(super) async fn runtime(config: &RuncConfig, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(&config.runtime)
        .arg("--root")
        .arg(RuncExecutor::runtime_root(&config.data_dir))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{}: {e}", config.runtime))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn container_dir(config: &RuncConfig, task: &Task) -> PathBuf {
    config.data_dir.join("containers").join(container_id(task))
}

/// Runs the task's container until it ends or is stopped, reporting every step.
async fn supervise(
    config: &RuncConfig,
    task: &Current,
    reporter: &Reporter,
    stop: CancellationToken,
    again: bool,
) {
    let first = current(task);
    let id = container_id(&first);
    let dir = container_dir(config, &first);
    let adopted = dir.join("config.json").is_file();
    // The address and published ports first: a port already taken refuses the task
    // before anything runs. An adopted container keeps the address it had.
    let (ip, _ports) = match network(config, &first, &id, adopted).await {
        Ok(n) => n,
        Err(why) => {
            reporter.report(&current(task), &status(TaskState::Rejected, why, None));
            return;
        }
    };
    let addresses: Vec<String> = ip.iter().map(ToString::to_string).collect();
    if again && adopted {
        reporter.report(
            &first,
            &status(TaskState::Starting, "starting again", Some(&id)),
        );
        if let Err(why) = relaunch(config, &first, &dir, &id).await {
            reporter.report(&current(task), &status(TaskState::Failed, why, Some(&id)));
            return;
        }
    } else if adopted {
        // Started by an earlier agent: its monitor kept it (or its exit code).
        let alive = runtime(config, &["state", &id]).await.is_ok();
        if !alive && Exit::read(&dir).is_none() {
            let why = "the container was lost while the agent was away";
            reporter.report(&current(task), &status(TaskState::Failed, why, Some(&id)));
            return;
        }
        tracing::info!(container = %id, task = %first.metadata.name, "adopted a running container");
    } else if let Err(why) = start(config, &first, reporter, &dir, &id, &addresses).await {
        reporter.report(&current(task), &status(TaskState::Rejected, why, None));
        return;
    }
    let check = first.spec.healthcheck.clone();
    let mut restarts = 0u32;
    loop {
        let mut health = check.as_ref().map(|_| Health::Starting);
        let running = |health: Option<Health>| {
            let mut s = status(TaskState::Running, "running", Some(&id));
            s.health = health;
            s.restart_count = restarts;
            s.addresses = addresses.clone();
            s
        };
        reporter.report(&current(task), &running(health));
        let started = tokio::time::Instant::now();
        let mut next_check = started;
        let mut failures = 0u32;
        let exit = loop {
            if let Some(exit) = Exit::read(&dir) {
                break exit;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.cancelled() => {
                    let grace = stop_grace(config, &current(task));
                    let exit = stop_container(config, &dir, &id, grace).await;
                    let mut s = status(TaskState::Shutdown, "stopped", Some(&id));
                    s.exit_code = exit.map(|e| e.exit_code);
                    reporter.report(&current(task), &s);
                    return;
                }
            }
            let Some(check) = check
                .as_ref()
                .filter(|_| tokio::time::Instant::now() >= next_check)
            else {
                continue;
            };
            next_check = tokio::time::Instant::now() + check.interval.0;
            match run_check(config, &id, check).await {
                Ok(()) => {
                    failures = 0;
                    if health != Some(Health::Healthy) {
                        health = Some(Health::Healthy);
                        reporter.report(&current(task), &running(health));
                    }
                }
                // Failures while the container is still starting up do not count.
                Err(_) if started.elapsed() < check.start_period.0 => {}
                Err(why) => {
                    failures += 1;
                    if failures >= check.retries {
                        // Unhealthy: the task fails and its service replaces it.
                        let grace = stop_grace(config, &current(task));
                        let exit = stop_container(config, &dir, &id, grace).await;
                        let mut s = status(
                            TaskState::Failed,
                            format!(
                            "unhealthy: the health check failed {failures} times in a row ({why})"
                        ),
                            Some(&id),
                        );
                        s.health = Some(Health::Unhealthy);
                        s.exit_code = exit.map(|e| e.exit_code);
                        reporter.report(&current(task), &s);
                        return;
                    }
                }
            }
        };
        if let Some(delay) = restart_delay(&current(task), exit.exit_code, restarts) {
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
            reporter.report(&current(task), &s);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => {
                    let mut s = status(TaskState::Shutdown, "stopped", Some(&id));
                    s.exit_code = Some(exit.exit_code);
                    s.restart_count = restarts;
                    reporter.report(&current(task), &s);
                    return;
                }
            }
            if let Err(why) = relaunch(config, &current(task), &dir, &id).await {
                let mut s = status(TaskState::Failed, format!("restarting: {why}"), Some(&id));
                s.restart_count = restarts;
                reporter.report(&current(task), &s);
                return;
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
        reporter.report(&current(task), &s);
        return;
    }
}

/// How long to wait before restarting a task's container in place, if its restart
/// policy says to (`docker run --restart`): `any` always, `on-failure` after a non-zero
/// exit, each up to `maxAttempts` times (0: no limit).
fn restart_delay(task: &Task, exit_code: i32, restarts: u32) -> Option<Duration> {
    let policy = task.spec.restart.as_ref()?;
    if task.spec.desired_state == DesiredState::Shutdown {
        return None;
    }
    let again = match policy.condition.unwrap_or(RestartCondition::Any) {
        RestartCondition::None => false,
        RestartCondition::OnFailure => exit_code != 0,
        RestartCondition::Any => true,
    };
    let attempts_left = policy.max_attempts == 0 || restarts < policy.max_attempts;
    (again && attempts_left).then_some(policy.delay.0)
}

/// Runs the health check command in the container; Err says how it failed.
async fn run_check(config: &RuncConfig, id: &str, check: &HealthCheck) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&config.runtime);
    cmd.arg("--root")
        .arg(RuncExecutor::runtime_root(&config.data_dir))
        .args(["exec", id])
        .args(&check.cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(check.timeout.0, cmd.status()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("exit code {}", s.code().unwrap_or(-1))),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {:?}", check.timeout.0)),
    }
}

/// The time between SIGTERM and SIGKILL: the stop's own (`shoal stop -t`), else the
/// node's.
fn stop_grace(config: &RuncConfig, task: &Task) -> Duration {
    task.metadata
        .annotations
        .get(shoal_api::labels::STOP_GRACE_PERIOD)
        .and_then(|g| g.parse::<shoal_api::Duration>().ok())
        .map_or(config.stop_grace, |g| g.0)
}

/// SIGTERM, then SIGKILL after `grace`; the exit once recorded.
async fn stop_container(
    config: &RuncConfig,
    dir: &Path,
    id: &str,
    grace: Duration,
) -> Option<Exit> {
    let _ = runtime(config, &["kill", id, "TERM"]).await;
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if let Some(e) = Exit::read(dir) {
            return Some(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = runtime(config, &["kill", id, "KILL"]).await;
    for _ in 0..50 {
        if let Some(e) = Exit::read(dir) {
            return Some(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Stops the container if it runs, removes it from the runtime, unmounts and deletes
/// its directory.
async fn cleanup(config: &RuncConfig, id: &str, dir: &Path) {
    if Exit::read(dir).is_none() && runtime(config, &["state", id]).await.is_ok() {
        stop_container(config, dir, id, config.stop_grace).await;
    }
    let _ = runtime(config, &["delete", "--force", id]).await;
    if let Some(net) = &config.network {
        net.detach(id).await;
    }
    if let Err(e) = RootfsLayout::new(dir).remove(&Overlay) {
        tracing::warn!(container = %id, error = %e, "could not remove the container's files");
    }
}
