//! `shoal logs`: container output, read from the agents of the nodes a service's (or a
//! task's) containers run on, merged into one stream. Without `follow`, every task's
//! lines come sorted by time; with it, as they arrive.

use std::sync::Arc;

use shoal_api::{Node, Task};
use shoal_store::ObjectStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::pb::{self, node_client::NodeClient};
use crate::service::status_of;

pub type LogsStream = ReceiverStream<Result<pb::LogEntry, Status>>;

/// The tasks whose containers `req` names: the task, or the service's tasks that have
/// (or had) a container, live ones and their history alike.
async fn tasks_of(objects: &ObjectStore, req: &pb::LogsRequest) -> Result<Vec<Task>, Status> {
    let kind = shoal_api::kind_by_name(&req.kind)
        .ok_or_else(|| Status::invalid_argument(format!("unknown kind {:?}", req.kind)))?;
    let tasks: Vec<Task> = match kind.kind {
        "Task" => vec![objects
            .get_typed::<Task>(&req.name)
            .await
            .map_err(status_of)?
            .ok_or_else(|| Status::not_found(format!("task/{} not found", req.name)))?],
        "Service" => {
            if objects
                .get(kind, &req.name)
                .await
                .map_err(status_of)?
                .is_none()
            {
                return Err(Status::not_found(format!("service/{} not found", req.name)));
            }
            let (items, _) = objects.list_typed::<Task>().await.map_err(status_of)?;
            items
                .into_iter()
                .flatten()
                .filter(|t| t.metadata.labels.get(shoal_api::labels::SERVICE) == Some(&req.name))
                .collect()
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "logs are for services and tasks, not {other}"
            )))
        }
    };
    Ok(tasks
        .into_iter()
        .filter(|t| {
            t.spec.node.is_some() && t.status.as_ref().is_some_and(|s| s.container_id.is_some())
        })
        .collect())
}

/// Where a node's agent serves its node API.
pub(crate) async fn node_address(objects: &ObjectStore, node: &str) -> Result<String, Status> {
    let n = objects
        .get_typed::<Node>(node)
        .await
        .map_err(status_of)?
        .ok_or_else(|| Status::unavailable(format!("node {node} is gone")))?;
    n.status
        .and_then(|s| s.address)
        .filter(|a| a.contains(':'))
        .ok_or_else(|| {
            Status::unavailable(format!("node {node} serves no logs (no agent address)"))
        })
}

/// `creds`: how this server reaches nodes' APIs (None: plaintext, an `--insecure` cluster).
pub async fn logs_stream(
    objects: ObjectStore,
    creds: Option<shoal_wire::Credentials>,
    req: pb::LogsRequest,
) -> Result<LogsStream, Status> {
    let tasks = tasks_of(&objects, &req).await?;
    let (tx, rx) = mpsc::channel(1024);
    let mut sources = Vec::new();
    for task in tasks {
        let node = task.spec.node.clone().unwrap_or_default();
        let address = node_address(&objects, &node).await?;
        let container = task
            .status
            .as_ref()
            .and_then(|s| s.container_id.clone())
            .unwrap_or_default();
        sources.push((task.metadata.name.clone(), node, address, container));
    }
    let req = Arc::new(req);
    tokio::spawn(async move {
        let mut batches = Vec::new();
        let mut followers = tokio::task::JoinSet::new();
        for (task, node, address, container) in sources {
            let request = pb::ContainerLogsRequest {
                container_id: container,
                follow: req.follow,
                tail: req.tail,
                since_unix_nanos: req.since_unix_nanos,
            };
            let stream = async {
                let channel = shoal_wire::node_channel(&address, &node, creds.as_ref())
                    .map_err(|e| Status::unavailable(format!("node {node} at {address}: {e}")))?;
                let mut client = NodeClient::new(channel);
                let logs = client.container_logs(request).await.map_err(|e| {
                    Status::new(
                        e.code(),
                        format!("node {node} at {address}: {}", e.message()),
                    )
                })?;
                Ok::<_, Status>(logs.into_inner())
            }
            .await;
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let label = move |mut e: pb::LogEntry| {
                e.task = task.clone();
                e.node = node.clone();
                e
            };
            if req.follow {
                let tx = tx.clone();
                followers.spawn(async move {
                    while let Ok(Some(e)) = stream.message().await {
                        if tx.send(Ok(label(e))).await.is_err() {
                            return;
                        }
                    }
                });
            } else {
                while let Ok(Some(e)) = stream.message().await {
                    batches.push(label(e));
                }
            }
        }
        // RFC 3339 times in UTC with nanoseconds sort as text.
        batches.sort_by(|a, b| a.time.cmp(&b.time));
        for e in batches {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        while followers.join_next().await.is_some() {}
    });
    Ok(ReceiverStream::new(rx))
}
