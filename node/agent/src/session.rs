//! One node's session with the server: registration, heartbeats, the assignment stream
//! (reconnecting and resyncing), and batched status reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::{Task, TaskStatus};
use shoal_wire::pb::agent_client::AgentClient;
use shoal_wire::pb::{self, AssignmentKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::container::overlay::Overlay;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub cpu: f64,
    pub memory_bytes: u64,
    pub address: String,
    pub role: String,
    /// Where log pipelines keep their state; None: the node runs none.
    pub pipelines: Option<crate::pipelines::PipelineDirs>,
}

/// What an agent does with its tasks.
pub trait Executor: Send + Sync + 'static {
    /// A task was assigned to this node, or changed (desired state, for one).
    fn upsert(&self, task: Arc<Task>, reporter: Reporter);
    /// A task is no longer this node's: stop and forget it.
    fn remove(&self, name: &str);
    /// After a (re)connect: these are all the node's tasks; forget any others.
    fn resync(&self, names: &[String]);
    /// Cut off from every server for longer than the heartbeat window: the server has
    /// (or is about to have) declared the node down and its tasks replaced, so stop
    /// them rather than run second copies (fencing). Simulated nodes run nothing.
    fn fence(&self) {}
    /// The overlay networks this node programs from the server's peer sets, if any.
    fn overlay(&self) -> Option<Arc<Overlay>> {
        None
    }
    /// The logs of the node's tasks, for log pipelines; None: the node runs none
    /// (a simulated node).
    fn task_logs(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<Vec<shoal_pipeline::tasks_in::TaskLog>>> {
        None
    }
}

/// A task's line to the server: queues its status reports (sent in batches) and asks
/// for the Secrets and Configs it names.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<pb::TaskStatusReport>,
    /// None in tests: no server to ask.
    files: Option<(AgentClient<Channel>, String)>,
}

impl Reporter {
    /// A reporter whose reports a test reads.
    #[cfg(test)]
    pub(crate) fn for_test() -> (Self, mpsc::UnboundedReceiver<pb::TaskStatusReport>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Reporter { tx, files: None }, rx)
    }

    /// The Secrets and Configs `task` names, from the server, which gives them only
    /// while the task is this node's and meant to run. Err says why not, for the task.
    pub async fn task_files(&self, task: &Task) -> Result<Vec<pb::TaskFile>, String> {
        let Some((client, node)) = &self.files else {
            return Err("no server to ask for the task's secrets and configs".into());
        };
        let asked = within(
            Duration::from_secs(30),
            client.clone().task_files(pb::TaskFilesRequest {
                node: node.clone(),
                task: task.metadata.name.clone(),
            }),
        )
        .await;
        asked
            .map(|r| r.into_inner().files)
            .map_err(|e| format!("secrets and configs: {}", e.message()))
    }

    pub fn report(&self, task: &Task, status: &TaskStatus) {
        let report = pb::TaskStatusReport {
            task: task.metadata.name.clone(),
            uid: task.metadata.uid.clone().unwrap_or_default(),
            status_json: serde_json::to_string(status).unwrap_or_default(),
        };
        // The receiver lives as long as the session; a send after shutdown is moot.
        let _ = self.tx.send(report);
    }
}

const BATCH: usize = 256;

/// Runs the node until `shutdown`: registers (again, whenever the lease is lost),
/// heartbeats, follows assignments and sends reports.
pub async fn run_node(
    channel: Channel,
    config: NodeConfig,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
) {
    let client = shoal_wire::agent_client(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let reporter = Reporter {
        tx,
        files: Some((client.clone(), config.name.clone())),
    };
    tokio::spawn(send_reports(
        client.clone(),
        config.name.clone(),
        rx,
        shutdown.clone(),
    ));
    if let Some(overlay) = executor.overlay() {
        tokio::spawn(overlay.clone().run());
        tokio::spawn(follow_peers(
            client.clone(),
            config.name.clone(),
            overlay,
            shutdown.clone(),
        ));
    }
    if let (Some(dirs), Some(tasks)) = (config.pipelines.clone(), executor.task_logs()) {
        tokio::spawn(crate::pipelines::run_pipelines(
            client.clone(),
            config.name.clone(),
            dirs,
            tasks,
            shutdown.clone(),
        ));
    }
    tokio::spawn(follow_assignments(
        client.clone(),
        config.name.clone(),
        executor.clone(),
        reporter,
        shutdown.clone(),
    ));
    let mut backoff = Duration::from_millis(200);
    let mut fence = Fence::default();
    while !shutdown.is_cancelled() {
        let registered = within(
            Duration::from_secs(5),
            client.clone().register(pb::RegisterRequest {
                name: config.name.clone(),
                labels: config.labels.clone().into_iter().collect(),
                cpu: config.cpu,
                memory_bytes: config.memory_bytes,
                address: config.address.clone(),
                role: config.role.clone(),
            }),
        )
        .await;
        let r = match registered {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::warn!(node = %config.name, error = %e.message(), "register failed; retrying");
                fence.check(&*executor);
                sleep_or_stop(backoff, &shutdown).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let period = Duration::from_millis(r.heartbeat_period_ms.max(100));
        fence.reached(Duration::from_millis(r.down_after_ms));
        loop {
            if sleep_or_stop(period, &shutdown).await {
                return;
            }
            // A heartbeat into a partition would hang for minutes of TCP retries.
            let beat = within(
                period,
                client.clone().heartbeat(pb::HeartbeatRequest {
                    node: config.name.clone(),
                    lease: r.lease,
                }),
            )
            .await;
            match beat {
                Ok(_) => fence.reached_again(),
                Err(e) if e.code() == tonic::Code::NotFound => break,
                Err(e) => {
                    tracing::debug!(node = %config.name, error = %e.message(), "heartbeat failed");
                    fence.check(&*executor);
                }
            }
        }
    }
}

/// `call`, or DEADLINE_EXCEEDED after `limit`.
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")))
}

/// When the node last reached a server, and how long it may go without before the
/// server gives its tasks up (known once it registered).
#[derive(Default)]
struct Fence {
    last: Option<std::time::Instant>,
    window: Option<Duration>,
    fenced: bool,
}

impl Fence {
    fn reached(&mut self, window: Duration) {
        if !window.is_zero() {
            self.window = Some(window);
        }
        self.reached_again();
    }

    fn reached_again(&mut self) {
        self.last = Some(std::time::Instant::now());
        self.fenced = false;
    }

    /// Stops the node's tasks once, when it has been cut off past the window.
    fn check(&mut self, executor: &dyn Executor) {
        let (Some(last), Some(window)) = (self.last, self.window) else {
            return;
        };
        if !self.fenced && last.elapsed() >= window {
            self.fenced = true;
            executor.fence();
        }
    }
}

/// Sleeps; returns true when shut down meanwhile.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

async fn follow_assignments(
    client: AgentClient<Channel>,
    node: String,
    executor: Arc<dyn Executor>,
    reporter: Reporter,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let stream = client
            .clone()
            .assignments(pb::AssignmentsRequest { node: node.clone() })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::debug!(%node, error = %e.message(), "assignments unavailable; retrying");
                sleep_or_stop(Duration::from_millis(500), &shutdown).await;
                continue;
            }
        };
        let mut initial = Vec::new();
        let mut synced = false;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = shutdown.cancelled() => return,
            };
            let a = match msg {
                Ok(Some(a)) => a,
                _ => break,
            };
            let kind = a.kind();
            let task = || -> Option<Task> {
                serde_json::from_str(&a.task_json)
                    .inspect_err(
                        |e| tracing::warn!(%node, error = %e, "unreadable task in assignment"),
                    )
                    .ok()
            };
            match kind {
                AssignmentKind::Synced => {
                    executor.resync(&initial);
                    synced = true;
                }
                AssignmentKind::Removed => {
                    if let Some(task) = task() {
                        executor.remove(&task.metadata.name);
                    }
                }
                AssignmentKind::Added | AssignmentKind::Modified => {
                    if let Some(task) = task() {
                        if !synced {
                            initial.push(task.metadata.name.clone());
                        }
                        executor.upsert(Arc::new(task), reporter.clone());
                    }
                }
                AssignmentKind::Unspecified => {
                    tracing::warn!(%node, "assignment of no known kind; ignored (a newer server?)");
                }
            }
        }
        sleep_or_stop(Duration::from_millis(200), &shutdown).await;
    }
}

/// Hands every peer set the server sends to `overlay`, reconnecting as needed.
async fn follow_peers(
    client: AgentClient<Channel>,
    node: String,
    overlay: Arc<Overlay>,
    shutdown: CancellationToken,
) {
    let open = |client: AgentClient<Channel>, node: String| async move {
        client.clone().peers(pb::PeersRequest { node }).await
    };
    follow_stream(
        client,
        node,
        "peers",
        open,
        |set| overlay.want(set),
        shutdown,
    )
    .await
}

/// Opens a server stream with `open` and hands each message to `each` until
/// `shutdown`, opening it again whenever it fails or ends.
pub(crate) async fn follow_stream<T, Open, Fut>(
    client: AgentClient<Channel>,
    node: String,
    what: &str,
    open: Open,
    mut each: impl FnMut(T),
    shutdown: CancellationToken,
) where
    Open: Fn(AgentClient<Channel>, String) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    while !shutdown.is_cancelled() {
        let mut stream = match open(client.clone(), node.clone()).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::debug!(%node, error = %e.message(), "{what} unavailable; retrying");
                sleep_or_stop(Duration::from_millis(500), &shutdown).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = shutdown.cancelled() => return,
            };
            match msg {
                Ok(Some(m)) => each(m),
                _ => break,
            }
        }
        sleep_or_stop(Duration::from_millis(200), &shutdown).await;
    }
}

async fn send_reports(
    client: AgentClient<Channel>,
    node: String,
    mut rx: mpsc::UnboundedReceiver<pb::TaskStatusReport>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = shutdown.cancelled() => return,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut attempt = 0u32;
        loop {
            let sent = client
                .clone()
                .report_status(pb::ReportStatusRequest {
                    node: node.clone(),
                    reports: batch.clone(),
                })
                .await;
            match sent {
                Ok(r) => {
                    for e in r.into_inner().errors {
                        tracing::debug!(%node, error = %e, "status report refused");
                    }
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::debug!(%node, error = %e.message(), "status report failed; retrying");
                    if sleep_or_stop(
                        Duration::from_millis(200 * u64::from(attempt.min(10))),
                        &shutdown,
                    )
                    .await
                    {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod fence_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Executor for Counting {
        fn upsert(&self, _: Arc<Task>, _: Reporter) {}
        fn remove(&self, _: &str) {}
        fn resync(&self, _: &[String]) {}
        fn fence(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn cut_off_for(fence: &mut Fence, ago: Duration) {
        fence.last = std::time::Instant::now().checked_sub(ago);
    }

    #[test]
    fn a_node_fences_once_past_the_window_and_again_only_after_reaching_a_server() {
        let ex = Counting::default();
        let mut fence = Fence::default();
        fence.check(&ex);
        assert_eq!(
            ex.0.load(Ordering::SeqCst),
            0,
            "never registered: no window known"
        );
        fence.reached(Duration::from_secs(3));
        cut_off_for(&mut fence, Duration::from_secs(2));
        fence.check(&ex);
        assert_eq!(ex.0.load(Ordering::SeqCst), 0, "inside the window");
        cut_off_for(&mut fence, Duration::from_secs(4));
        fence.check(&ex);
        fence.check(&ex);
        assert_eq!(ex.0.load(Ordering::SeqCst), 1, "past it, once");
        fence.reached_again();
        cut_off_for(&mut fence, Duration::from_secs(4));
        fence.check(&ex);
        assert_eq!(
            ex.0.load(Ordering::SeqCst),
            2,
            "cut off again after a heartbeat"
        );
    }
}
