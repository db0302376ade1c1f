//! The `shoal` binary: argument parsing and wiring. Each command lives in `cmd/`.

mod cmd;
mod manifests;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Where a client looks when neither `--server` nor a client config names a server.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7443";

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Docker Swarm's features, built the Kubernetes way"
)]
pub struct Cli {
    /// The shoal API server (default: the client config's, else
    /// https://127.0.0.1:7443); several, separated by commas, for client commands to
    /// fail over between servers that share one etcd.
    #[arg(long, global = true, env = "SHOAL_SERVER")]
    server: Option<String>,
    /// The client config: server, CA, client certificate (default: ~/.shoal/config,
    /// which `shoal server` writes, as it does <data-dir>/admin.yaml).
    #[arg(long, global = true, env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
    /// CA certificate (PEM) to trust for an https:// server, instead of the config's.
    #[arg(long, global = true, env = "SHOAL_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum)]
    output: Option<Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
    Wide,
    Name,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server and the controllers.
    Server(cmd::server::Args),
    /// Create or update objects from manifests.
    Apply(cmd::apply::Args),
    /// List objects, or show one.
    Get(cmd::get::Args),
    /// Show an object in detail, with its conditions and recent events.
    Describe(cmd::describe::Args),
    /// Delete objects by name or by manifest.
    Delete(cmd::delete::Args),
    /// Show what apply would change. Exit 0: no change, 1: changes, >1: error.
    Diff(cmd::diff::Args),
    /// Show reconcile events.
    Events(cmd::events::Args),
    /// Set a replicated service's replicas: service/NAME=N
    Scale(cmd::scale::Args),
    /// Follow, list or undo a service's rollouts.
    #[command(subcommand)]
    Rollout(cmd::rollout::Command),
    /// List networks, or show one's addresses.
    #[command(subcommand)]
    Network(cmd::network::Command),
    /// Drain, pause or activate a node.
    #[command(subcommand)]
    Node(cmd::node::Command),
    /// Create, list or remove secrets (mounted on tmpfs at /run/secrets/NAME; never
    /// printed), or rotate the key they are sealed under.
    #[command(subcommand)]
    Secret(cmd::value::Command),
    /// Create, list or remove configs (files mounted at their target).
    #[command(subcommand)]
    Config(cmd::value::Command),
    /// Sync a GitSync now, or suspend and resume it.
    #[command(subcommand)]
    Gitsync(cmd::gitsync::Command),
    /// Print or rotate the join tokens nodes join with.
    #[command(subcommand)]
    Token(cmd::token::Command),
    /// Run simulated nodes through the real agent API.
    Sim(cmd::sim::Args),
    /// Pull, import, list and remove images in this node's store.
    Image(cmd::image::Args),
    /// Run the node agent: this machine's tasks as containers.
    Agent(cmd::agent::Args),
    /// Print a service's or task's container output.
    Logs(cmd::logs::Args),
    /// Run a command in a task's container.
    Exec(cmd::exec::Args),
    /// A one-node cluster here: server, agent, your manifests, live events.
    Up(cmd::up::Args),
    /// Run a one-off task (a container) and follow it, like `docker run`.
    Run(cmd::run::Args),
    /// List tasks, like `docker ps`.
    Ps(cmd::ps::Args),
    /// Stop tasks (SIGTERM, then SIGKILL after the grace period).
    Stop(cmd::stop::Args),
    /// Run ended or stopped tasks again, in the same container.
    Start(cmd::start::Args),
    /// Delete ended tasks (running ones with --force).
    Rm(cmd::rm::Args),
    /// Give a standalone task a new name; its container carries on.
    Rename(cmd::rename::Args),
    /// Show client and server versions, the store and the controller leader.
    Version,
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
}

/// What a command hands back to `main`: an exit code, or an error to print.
pub type Outcome = anyhow::Result<ExitCode>;

/// A client command whose stdout is closed (`shoal get svc | head`) ends there, quietly,
/// as kubectl and docker do: the default SIGPIPE action, not Rust's EPIPE panic. The
/// long-running programs keep ignoring SIGPIPE: a closed pipe to a child process or a
/// peer must be an error they handle, never their end.
fn end_quietly_on_a_closed_stdout(command: &Command) {
    let serves = matches!(
        command,
        Command::Server(_) | Command::Agent(_) | Command::Up(_) | Command::Sim(_)
    );
    if !serves {
        // SAFETY: restores the default action of one signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    end_quietly_on_a_closed_stdout(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let fail_code = if matches!(cli.command, Command::Diff(_)) {
        2
    } else {
        1
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(fail_code)
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let ctx = cmd::Context::from_flags(cli.server, cli.config, cli.ca_cert, cli.output);
    match cli.command {
        Command::Server(a) => cmd::server::run(a).await,
        Command::Token(c) => cmd::token::run(&ctx, c).await,
        Command::Apply(a) => cmd::apply::run(&ctx, a).await,
        Command::Get(a) => cmd::get::run(&ctx, a).await,
        Command::Describe(a) => cmd::describe::run(&ctx, a).await,
        Command::Delete(a) => cmd::delete::run(&ctx, a).await,
        Command::Diff(a) => cmd::diff::run(&ctx, a).await,
        Command::Events(a) => cmd::events::run(&ctx, a).await,
        Command::Scale(a) => cmd::scale::run(&ctx, a).await,
        Command::Rollout(c) => cmd::rollout::run(&ctx, c).await,
        Command::Network(c) => cmd::network::run(&ctx, c).await,
        Command::Node(c) => cmd::node::run(&ctx, c).await,
        Command::Secret(c) => cmd::value::run(&ctx, "Secret", c).await,
        Command::Config(c) => cmd::value::run(&ctx, "Config", c).await,
        Command::Gitsync(c) => cmd::gitsync::run(&ctx, c).await,
        Command::Sim(a) => cmd::sim::run(&ctx, a).await,
        Command::Image(a) => cmd::image::run(&ctx, a).await,
        Command::Agent(a) => cmd::agent::run(&ctx, a).await,
        Command::Logs(a) => cmd::logs::run(&ctx, a).await,
        Command::Exec(a) => cmd::exec::run(&ctx, a).await,
        Command::Up(a) => cmd::up::run(&ctx, a).await,
        Command::Run(a) => cmd::run::run(&ctx, a).await,
        Command::Ps(a) => cmd::ps::run(&ctx, a).await,
        Command::Stop(a) => cmd::stop::run(&ctx, a).await,
        Command::Rm(a) => cmd::rm::run(&ctx, a).await,
        Command::Start(a) => cmd::start::run(&ctx, a).await,
        Command::Rename(a) => cmd::rename::run(&ctx, a).await,
        Command::Version => cmd::version(&ctx).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
