//! `shoal up`: a one-node cluster on this machine. Runs `shoal server` (embedded
//! store) and `shoal agent` as child processes, applies the given manifests, then
//! streams events until interrupted, and stops both. Containers outlive it (their
//! monitors keep them); the next `shoal up` on the same data directory takes them back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Manifests to apply once the cluster is up (files or directories); repeatable.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// The cluster's data: server/ (the store), node/ (images, containers), logs.
    #[arg(long, default_value = "/var/lib/shoal")]
    data_dir: PathBuf,
    /// The API address.
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: std::net::SocketAddr,
    /// The agent's node API address.
    #[arg(long, default_value = "127.0.0.1:7444")]
    agent_listen: std::net::SocketAddr,
    /// The node's name (default: this machine's hostname).
    #[arg(long)]
    name: Option<String>,
    /// Registries (host:port) to pull from over plain http; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// The node's container bridge.
    #[arg(long, default_value = shoal_agent::container::network::BRIDGE)]
    bridge: String,
    /// The bridge's subnet.
    #[arg(long, default_value = "172.30.0.0/16")]
    subnet: String,
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
struct Managed(Child);

impl Drop for Managed {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[String], log: &Path, env: &[(&str, &str)]) -> anyhow::Result<Managed> {
    let log_file =
        std::fs::File::create(log).map_err(|e| anyhow::anyhow!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // If `shoal up` itself is killed outright, its server and agent go with it.
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; prctl is async-signal-safe and
    // touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGTERM))
                .map_err(std::io::Error::from)
        });
    }
    cmd.envs(env.iter().copied());
    Ok(Managed(cmd.spawn()?))
}

pub async fn run(_ctx: &Context, a: Args) -> Outcome {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("shoal up runs a node agent, which runs containers: run it as root");
    }
    std::fs::create_dir_all(&a.data_dir)?;
    let data = a.data_dir.canonicalize()?;
    let url = super::server_tls::local_url(a.listen, true);
    // The server writes it anew once it runs: a stale one is no sign it is up.
    let admin = data.join("server").join("admin.yaml");
    let _ = std::fs::remove_file(&admin);
    let name = match a.name {
        Some(n) => n,
        None => nix::unistd::gethostname()?
            .to_string_lossy()
            .to_lowercase()
            .replace(['_', '.'], "-"),
    };
    let server = spawn(
        &[
            "server".into(),
            "--listen".into(),
            a.listen.to_string(),
            "--data-dir".into(),
            data.join("server").display().to_string(),
        ],
        &data.join("server.log"),
        &[],
    )?;
    let mut ready = None;
    for _ in 0..100 {
        if admin.is_file() {
            let ctx = Context::from_flags(Some(url.clone()), Some(admin.clone()), None, None);
            if ctx.client().await.is_ok() {
                ready = Some(ctx);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(ctx) = ready else {
        anyhow::bail!(
            "the server did not start; see {}",
            data.join("server.log").display()
        );
    };
    if let Err(e) = share_with_sudo_user(&admin) {
        eprintln!("shoal up: the admin config is not in the sudo user's home: {e:#}");
    }
    let token = ctx
        .client()
        .await?
        .join_token(shoal_wire::pb::JoinTokenRequest {
            role: "worker".into(),
            rotate: false,
        })
        .await?
        .into_inner()
        .token;
    let mut agent_args = vec![
        "agent".to_string(),
        "--join".into(),
        url.clone(),
        "--name".into(),
        name.clone(),
        "--data-dir".into(),
        data.join("node").display().to_string(),
        "--listen".into(),
        a.agent_listen.to_string(),
        "--bridge".into(),
        a.bridge.clone(),
        "--subnet".into(),
        a.subnet.clone(),
    ];
    for r in &a.insecure_registry {
        agent_args.extend(["--insecure-registry".to_string(), r.clone()]);
    }
    let agent = spawn(
        &agent_args,
        &data.join("agent.log"),
        &[("SHOAL_JOIN_TOKEN", token.as_str())],
    )?;
    eprintln!(
        "shoal up: API on {url}, node {name}; data and logs in {}",
        data.display()
    );
    if !a.files.is_empty() {
        super::apply::apply_files(&ctx, &a.files).await?;
    }
    eprintln!("shoal up: streaming events (Ctrl-C stops the server and the agent)");
    let mut events = Command::new(std::env::current_exe()?)
        .args(["events", "-w"])
        .env("SHOAL_SERVER", &url)
        .env("SHOAL_CONFIG", &admin)
        .stdin(Stdio::null())
        .spawn()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = events.kill();
    let _ = events.wait();
    drop(agent);
    drop(server);
    Ok(ExitCode::SUCCESS)
}

/// Run through sudo, `shoal up` also gives the user who ran sudo the admin config (in
/// their ~/.shoal/config, theirs alone), so the CLI works in their other terminals as
/// it does for root: they could read it through sudo anyway.
fn share_with_sudo_user(admin: &Path) -> anyhow::Result<()> {
    let Some(name) = std::env::var_os("SUDO_USER") else {
        return Ok(());
    };
    let Ok(Some(user)) = nix::unistd::User::from_name(&name.to_string_lossy()) else {
        return Ok(());
    };
    if user.uid.is_root() || !user.dir.is_dir() {
        return Ok(());
    }
    let config = shoal_wire::ClientConfig::read(admin)?;
    super::server_tls::install_user_config(
        &config,
        &user.dir,
        Some((user.uid.as_raw(), user.gid.as_raw())),
    )
}
