//! The node API the agent serves to the API server: container output, read from the
//! json-file logs the monitors write, and commands run in containers (`shoal exec`).
//! (Loopback by default, like the API server.)

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use shoal_wire::pb::{self, node_server::Node};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::container::logs::{self, LogQuery};
use crate::exec;
use shoal_monitor::LogLine;

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

#[tonic::async_trait]
impl Node for NodeApi {
    type ContainerLogsStream = ReceiverStream<Result<pb::LogEntry, Status>>;
    type ContainerExecStream = exec::ExecStream;

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
        req: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ContainerExecStream>, Status> {
        let mut inputs = req.into_inner();
        let start = inputs
            .message()
            .await?
            .and_then(|i| i.start)
            .ok_or_else(|| Status::invalid_argument("exec: the first message says what to run"))?;
        self.container_dir(&start.target)?;
        let runtime = exec::Runtime {
            binary: self.runtime.clone().into(),
            root: self.runtime_root.clone(),
        };
        exec::exec(&runtime, start, inputs).await.map(Response::new)
    }
}
