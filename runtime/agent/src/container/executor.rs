//! The real executor: each task assigned to the node becomes a container run by an OCI
//! runtime (runc by default) under a `shoal monitor` process of its own.
//!
//! A task goes preparing (image pulled if missing, with progress in the message) →
//! starting (overlay rootfs, runtime spec, monitor) → running → complete or failed with
//! its exit code. `desiredState: shutdown` sends SIGTERM, then SIGKILL after the grace
//! period, and reports `shutdown`. A task that is no longer the node's is stopped and
//! its container, writable layer and logs removed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::{
    DesiredState, Health, HealthCheck, MountType, RestartCondition, Task, TaskState, TaskStatus,
    START_ANNOTATION,
};
use tokio_util::sync::CancellationToken;

use super::bundle::make_bundle;
use super::monitor::{Exit, EXIT_FILE, PID_FILE};
use super::network::Network;
use super::ports::{PortLease, PortTable};
use super::rootfs::{Overlay, RootfsLayout};
use super::spec::{ContainerMount, ContainerRequest};
use crate::image::{self, ImageStore, Progress, PullOptions};
use crate::session::{Executor, Reporter};

#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// Images in `<data_dir>/images`, containers in `<data_dir>/containers`.
    pub data_dir: PathBuf,
    /// The OCI runtime binary.
    pub runtime: String,
    /// This binary, which runs `shoal monitor`.
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

fn status(state: TaskState, message: impl Into<String>, id: Option<&str>) -> TaskStatus {
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
        // cleans it up) but not started.
        let run_now = !(task.spec.desired_state == DesiredState::Shutdown || terminal);
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

async fn runtime(config: &RuncConfig, args: &[&str]) -> Result<String, String> {
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
    } else if let Err(why) = start(config, &first, reporter, &dir, &id).await {
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
                    let exit = stop_container(config, &dir, &id).await;
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
                        let exit = stop_container(config, &dir, &id).await;
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

/// The same container again, with its writable layer and logs: the runtime forgets the
/// old process, the monitor starts a new one.
async fn relaunch(config: &RuncConfig, task: &Task, dir: &Path, id: &str) -> Result<(), String> {
    let _ = runtime(config, &["delete", "--force", id]).await;
    for file in [EXIT_FILE, PID_FILE] {
        match std::fs::remove_file(dir.join(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{file}: {e}")),
        }
    }
    launch(config, task, dir, id).await
}

/// Image, rootfs, spec, monitor; Err is why the task cannot run here.
async fn start(
    config: &RuncConfig,
    task: &Task,
    reporter: &Reporter,
    dir: &Path,
    id: &str,
) -> Result<(), String> {
    let store = ImageStore::open(&config.data_dir.join("images")).map_err(|e| e.to_string())?;
    let name = image::normalize(&task.spec.image).map_err(|e| e.to_string())?;
    let record = match store.get(&name).map_err(|e| e.to_string())? {
        Some(r) => r,
        None => {
            reporter.report(
                task,
                &status(TaskState::Preparing, format!("pulling {name}"), None),
            );
            let mut last = std::time::Instant::now();
            let mut progress = |p: Progress| {
                if let Progress::Downloading { done, total, .. } = p {
                    if last.elapsed() >= Duration::from_secs(1) {
                        last = std::time::Instant::now();
                        let msg =
                            format!("pulling {name}: {} of {} KiB", done / 1024, total / 1024);
                        reporter.report(task, &status(TaskState::Preparing, msg, None));
                    }
                }
            };
            image::pull(&store, &name, &config.pull, &mut progress)
                .await
                .map_err(|e| format!("pulling {name}: {e}"))?
        }
    };
    reporter.report(task, &status(TaskState::Starting, "starting", Some(id)));
    let req = ContainerRequest {
        command: task.spec.command.clone(),
        env: task.spec.env.clone(),
        hostname: task.metadata.name.chars().take(63).collect(),
        cpu_limit: task
            .spec
            .resources
            .limits
            .as_ref()
            .map(|l| l.cpu)
            .filter(|c| *c > 0.0),
        memory_limit: task
            .spec
            .resources
            .limits
            .as_ref()
            .map(|l| l.memory.0)
            .filter(|m| *m > 0),
        entrypoint: task.spec.entrypoint.clone(),
        workdir: task.spec.workdir.clone(),
        user: task.spec.user.clone(),
        mounts: mounts(config, task)?,
        terminal: false,
        netns: config
            .network
            .as_ref()
            .map(|n| n.netns_path(&container_id(task))),
    };
    make_bundle(&store, &record, &req, &RootfsLayout::new(dir), &Overlay)
        .map_err(|e| e.to_string())?;
    launch(config, task, dir, id).await
}

/// The container's address on the node network (claimed and connected unless adopted)
/// and its published ports, open.
async fn network(
    config: &RuncConfig,
    task: &Task,
    id: &str,
    adopted: bool,
) -> Result<(Option<Ipv4Addr>, Option<PortLease>), String> {
    let Some(net) = &config.network else {
        return Ok((None, None));
    };
    let ip = match net.address_of(id) {
        Some(ip) if adopted => ip,
        _ => net.attach(id).await.map_err(|e| e.to_string())?.ip,
    };
    let service = task.metadata.labels.get("shoal.dev/service");
    let ports = config
        .ports
        .publish(id, service.map(String::as_str), &task.spec.ports, ip)
        .await?;
    Ok((Some(ip), Some(ports)))
}

/// The bind sources, volume directories and tmpfs sizes of the task's mounts; Err when
/// a bind source is missing (Docker's `--mount` refuses that too).
fn mounts(config: &RuncConfig, task: &Task) -> Result<Vec<ContainerMount>, String> {
    task.spec
        .mounts
        .iter()
        .map(|m| {
            let source = match m.type_ {
                MountType::Bind => {
                    let path = PathBuf::from(&m.source);
                    if !path.exists() {
                        return Err(format!("bind mount source {} does not exist", m.source));
                    }
                    Some(path)
                }
                MountType::Volume => {
                    let path = volume_dir(&config.data_dir, &m.source);
                    std::fs::create_dir_all(&path)
                        .map_err(|e| format!("volume {}: {e}", m.source))?;
                    Some(path)
                }
                MountType::Tmpfs => None,
            };
            Ok(ContainerMount {
                source,
                target: m.target.clone(),
                read_only: m.read_only,
                size: m.size.map(|s| s.0),
            })
        })
        .collect()
}

/// Where a named volume keeps its files; it outlives the containers that use it.
pub fn volume_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("volumes").join(name).join("_data")
}

/// Starts the bundle in `dir` under a new monitor (first start, and restarts in place).
async fn launch(config: &RuncConfig, task: &Task, dir: &Path, id: &str) -> Result<(), String> {
    let logging = &task.spec.logging;
    let max_size = logging.max_size.map_or(config.log_max_size, |s| s.0);
    let max_files = logging.max_file.unwrap_or(config.log_max_files);
    let root = RuncExecutor::runtime_root(&config.data_dir);
    let mut cmd = tokio::process::Command::new(&config.monitor_exe);
    cmd.arg("monitor")
        .arg("--dir")
        .arg(dir)
        .args(["--id", id, "--runtime", &config.runtime])
        .arg("--runtime-root")
        .arg(&root)
        .args(["--log-max-size", &max_size.to_string()])
        .args(["--log-max-files", &max_files.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a signal to the agent's group does not reach it.
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the monitor: {e}"))?;
    // Reap it when it ends (while we live; after that, init does).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    // Running once the runtime has written the container's pid (after it started the
    // process), or already finished. Watching a file costs nothing; asking the runtime
    // costs a process per look.
    for _ in 0..1500 {
        if dir.join(PID_FILE).is_file() || Exit::read(dir).is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!(
        "{} did not start the container within 15s",
        config.runtime
    ))
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

/// SIGTERM, then SIGKILL after the grace period; the exit once recorded.
async fn stop_container(config: &RuncConfig, dir: &Path, id: &str) -> Option<Exit> {
    let _ = runtime(config, &["kill", id, "TERM"]).await;
    let deadline = tokio::time::Instant::now() + config.stop_grace;
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
        stop_container(config, dir, id).await;
    }
    let _ = runtime(config, &["delete", "--force", id]).await;
    if let Some(net) = &config.network {
        net.detach(id).await;
    }
    if let Err(e) = RootfsLayout::new(dir).remove(&Overlay) {
        tracing::warn!(container = %id, error = %e, "could not remove the container's files");
    }
}
