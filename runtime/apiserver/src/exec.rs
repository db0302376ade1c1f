//! `shoal exec`: a command run in a task's container by the agent of its node, its
//! output streamed back, then its exit code.

use shoal_api::Task;
use shoal_store::ObjectStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::logs::node_address;
use crate::pb::{self, node_client::NodeClient};
use crate::service::status_of;

pub type ExecStream = ReceiverStream<Result<pb::ExecOutput, Status>>;

pub async fn exec_stream(objects: ObjectStore, req: pb::ExecRequest) -> Result<ExecStream, Status> {
    let task = objects
        .get_typed::<Task>(&req.task)
        .await
        .map_err(status_of)?
        .ok_or_else(|| Status::not_found(format!("task/{} not found", req.task)))?;
    let status = task.status.clone().unwrap_or_default();
    let (Some(node), Some(container)) = (task.spec.node.clone(), status.container_id.clone())
    else {
        return Err(Status::failed_precondition(format!(
            "task/{} has no container yet ({:?})",
            req.task, status.state
        )));
    };
    if status.state != shoal_api::TaskState::Running {
        return Err(Status::failed_precondition(format!(
            "task/{} is not running (it is {:?})",
            req.task, status.state
        )));
    }
    let address = node_address(&objects, &node).await?;
    let mut client = NodeClient::connect(format!("http://{address}"))
        .await
        .map_err(|e| Status::unavailable(format!("node {node} at {address}: {e}")))?;
    let mut stream = client
        .container_exec(pb::ContainerExecRequest {
            container_id: container,
            command: req.command,
        })
        .await?
        .into_inner();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let item = match stream.message().await {
                Ok(Some(o)) => Ok(o),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
