//! Preparing and starting a task's container: the image (pulled if missing, with
//! progress in the task's message), its address and published ports, its mounts (with
//! its secrets and configs), the bundle, and the monitor that runs it; and starting the
//! same bundle again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shoal_api::{MountType, Task, TaskState};

use super::bundle::make_bundle;
use super::config::{container_id, runc, RuncConfig};
use super::files;
use super::overlay::Join;
use super::ports::PortLease;
use super::rootfs::{Overlay, RootfsLayout};
use super::spec::{ContainerMount, ContainerRequest};
use super::status;
use crate::image::{self, ImageStore, Progress};
use crate::session::Reporter;
use shoal_monitor::{Exit, MonitorConfig, EXIT_FILE, PID_FILE};

/// The same container again, with its writable layer and logs: the runtime forgets the
/// old process, the monitor starts a new one.
pub(super) async fn relaunch(
    config: &RuncConfig,
    task: &Task,
    dir: &Path,
    id: &str,
) -> Result<(), String> {
    let _ = runc(config, &["delete", "--force", id]).await;
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
pub(super) async fn start(
    config: &RuncConfig,
    task: &Task,
    reporter: &Reporter,
    dir: &Path,
    id: &str,
    addresses: &[String],
) -> Result<(), String> {
    let store = ImageStore::open(&config.data_dir.join("images")).map_err(|e| e.to_string())?;
    let name = image::normalize(&task.spec.container.image).map_err(|e| e.to_string())?;
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
    let mut starting = status(TaskState::Starting, "starting", Some(id));
    starting.addresses = addresses.to_vec();
    reporter.report(task, &starting);
    let mut mounts = mounts(config, task)?;
    if files::wanted(task) {
        let given = reporter.task_files(task).await?;
        mounts.extend(files::place(
            &RootfsLayout::new(dir),
            task,
            &given,
            &Overlay,
        )?);
    }
    if let Some(net) = &config.network {
        mounts.push(resolv_conf(dir, net.gateway())?);
    }
    let req = ContainerRequest {
        container: task.spec.container.clone(),
        hostname: task.metadata.name.chars().take(63).collect(),
        mounts,
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

/// The container's addresses: on the node network (claimed and connected unless
/// adopted) as `bridge=IP`, then on each overlay network it joins as `NETWORK=IP`;
/// and its published ports, open.
pub(super) async fn network(
    config: &RuncConfig,
    task: &Task,
    id: &str,
    adopted: bool,
) -> Result<(Vec<String>, Option<PortLease>), String> {
    let joins = overlay_joins(task)?;
    let Some(net) = &config.network else {
        if !joins.is_empty() {
            return Err(
                "this node runs containers without a network; it cannot join overlays".into(),
            );
        }
        return Ok((Vec::new(), None));
    };
    let ip = match net.address_of(id) {
        Some(ip) if adopted => ip,
        _ => net.attach(id).await.map_err(|e| e.to_string())?.ip,
    };
    let mut addresses = vec![format!("bridge={ip}")];
    if !joins.is_empty() {
        let overlay = config
            .overlay
            .as_ref()
            .ok_or("this node has no overlay networking")?;
        let links: Vec<(String, String)> = task
            .spec
            .container
            .links
            .iter()
            .filter_map(|l| shoal_api::parse_link(l).ok())
            .map(|(name, alias)| (alias.to_string(), name.to_string()))
            .collect();
        let netns = net.netns_path(id);
        addresses.extend(overlay.attach(id, &netns, ip, &joins, &links).await?);
    }
    let service = task.metadata.labels.get(shoal_api::labels::SERVICE);
    let ports = config
        .ports
        .publish(
            id,
            service.map(String::as_str),
            &task.spec.container.ports,
            ip,
        )
        .await?;
    Ok((addresses, Some(ports)))
}

/// The container's /etc/resolv.conf: the node's resolver on the bridge's gateway
/// (`dns.rs`), which answers cluster names and forwards the rest. `ndots:0`: a name
/// is asked as it is first; the search domain is the cluster's own, so a resolver
/// that searches first still asks for a cluster name (never the hostname's tail).
fn resolv_conf(dir: &Path, gateway: std::net::Ipv4Addr) -> Result<ContainerMount, String> {
    let path = dir.join("resolv.conf");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = format!(
        "search {}\nnameserver {gateway}\noptions ndots:0\n",
        crate::dns::DOMAIN
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(ContainerMount {
        source: Some(path),
        target: "/etc/resolv.conf".into(),
        read_only: true,
        size: None,
    })
}

/// The task's overlay attachments, as the network controller gave them.
fn overlay_joins(task: &Task) -> Result<Vec<Join>, String> {
    let attachments = task.status.as_ref().map_or(&[][..], |s| &s.attachments[..]);
    task.spec
        .container
        .networks
        .iter()
        .map(|n| {
            let a = attachments
                .iter()
                .find(|a| a.network == n.name() && a.vni != 0)
                .ok_or_else(|| format!("network {}: no address given yet", n.name()))?;
            Join::from_attachment(a)
        })
        .collect()
}

/// The bind sources, volume directories and tmpfs sizes of the task's mounts; Err when
/// a bind source is missing (Docker's `--mount` refuses that too).
fn mounts(config: &RuncConfig, task: &Task) -> Result<Vec<ContainerMount>, String> {
    task.spec
        .container
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
    let logging = &task.spec.container.logging;
    let max_size = logging.max_size.map_or(config.log_max_size, |s| s.0);
    let max_files = logging.max_file.unwrap_or(config.log_max_files);
    let root = RuncConfig::runtime_root(&config.data_dir);
    let monitor = MonitorConfig {
        dir: dir.to_path_buf(),
        id: id.to_string(),
        runtime: config.runtime.clone(),
        runtime_root: root,
        max_size,
        max_files,
    };
    let mut cmd = tokio::process::Command::new(&config.monitor_exe);
    cmd.args(monitor.to_args())
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
