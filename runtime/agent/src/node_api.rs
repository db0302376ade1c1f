//! The node API the agent serves to the API server: container output, read from the
//! json-file logs the monitors write, and commands run in containers (`shoal exec`).
//! (Loopback by default, like the API server.)

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use shoal_apiserver::pb::{self, node_server::Node};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::container::logs::{self, LogQuery};
use crate::container::monitor::LogLine;

pub struct NodeApi {
    containers: PathBuf,
    runtime: String,
    runtime_root: PathBuf,
}

impl NodeApi {
    /// Serves the containers under `<data_dir>/containers`, run by `runtime`.
    pub fn new(data_dir: &std::path::Path, runtime: &str) -> Self {
        NodeApi {
            containers: data_dir.join("containers"),
            runtime: runtime.to_string(),
            runtime_root: crate::container::RuncExecutor::runtime_root(data_dir),
        }
    }

    /// The container's directory, if `id` is one of ours and on this node.
    fn container_dir(&self, id: &str) -> Result<PathBuf, Status> {
        let plain = id.starts_with("shoal-")
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(Status::invalid_argument(format!("container id {id:?}")));
        }
        let dir = self.containers.join(id);
        if !dir.is_dir() {
            return Err(Status::not_found(format!(
                "container {id} is not on this node"
            )));
        }
        Ok(dir)
    }
}

fn entry(l: LogLine) -> pb::LogEntry {
    pb::LogEntry {
        task: String::new(),
        node: String::new(),
        stream: l.stream,
        time: l.time,
        line: l.log,
    }
}

fn output(stream: &str, data: Vec<u8>, exit_code: i32) -> pb::ExecOutput {
    pb::ExecOutput {
        stream: stream.into(),
        data,
        exit_code,
    }
}

/// Sends what `reader` produces as `stream` chunks.
async fn forward(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    stream: &'static str,
    tx: mpsc::Sender<Result<pb::ExecOutput, Status>>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0
            || tx
                .send(Ok(output(stream, buf[..n].to_vec(), 0)))
                .await
                .is_err()
        {
            return;
        }
    }
}

#[tonic::async_trait]
impl Node for NodeApi {
    type ContainerLogsStream = ReceiverStream<Result<pb::LogEntry, Status>>;
    type ContainerExecStream = ReceiverStream<Result<pb::ExecOutput, Status>>;

    async fn container_logs(
        &self,
        req: Request<pb::ContainerLogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        let req = req.into_inner();
        let dir = self.container_dir(&req.container_id)?;
        let query = LogQuery {
            tail: usize::try_from(req.tail).ok(),
            since: (req.since_unix_nanos > 0)
                .then(|| DateTime::<Utc>::from_timestamp_nanos(req.since_unix_nanos)),
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let (lines, end) = {
                let dir = dir.clone();
                match tokio::task::spawn_blocking(move || logs::read(&dir, query)).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            };
            for l in lines {
                if tx.send(Ok(entry(l))).await.is_err() {
                    return;
                }
            }
            if req.follow {
                logs::follow(&dir, end, |lines| {
                    let tx = tx.clone();
                    async move {
                        for l in lines {
                            if tx.send(Ok(entry(l))).await.is_err() {
                                return false;
                            }
                        }
                        true
                    }
                })
                .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn container_exec(
        &self,
        req: Request<pb::ContainerExecRequest>,
    ) -> Result<Response<Self::ContainerExecStream>, Status> {
        let req = req.into_inner();
        self.container_dir(&req.container_id)?;
        if req.command.is_empty() {
            return Err(Status::invalid_argument("no command to run"));
        }
        let mut child = tokio::process::Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.runtime_root)
            .args(["exec", &req.container_id])
            .args(&req.command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Status::internal(format!("{}: {e}", self.runtime)))?;
        let (tx, rx) = mpsc::channel(64);
        let (out, err) = (child.stdout.take(), child.stderr.take());
        tokio::spawn(async move {
            let stdout = async {
                if let Some(out) = out {
                    forward(out, "stdout", tx.clone()).await;
                }
            };
            let stderr = async {
                if let Some(err) = err {
                    forward(err, "stderr", tx.clone()).await;
                }
            };
            tokio::join!(stdout, stderr);
            let code = match child.wait().await {
                Ok(s) => s.code().unwrap_or(128 + 9),
                Err(_) => 255,
            };
            let _ = tx.send(Ok(output("exit", Vec::new(), code))).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
