//! `shoal exec`: a command run in a task's container by the agent of its node, its
//! output streamed back, then its exit code.

use futures::StreamExt;
use shoal_api::Task;
use shoal_store::ObjectStore;
use tonic::Status;

use crate::logs::node_address;
use crate::pb::{self, node_client::NodeClient};
use crate::service::status_of;

pub type ExecStream = tonic::Streaming<pb::ExecOutput>;

/// Api.Exec: the first input names the task; it and every later input (stdin, terminal
/// sizes) go on to the agent of the task's node, the container's output comes back.
pub async fn exec_stream(
    objects: ObjectStore,
    creds: Option<shoal_wire::Credentials>,
    mut inputs: tonic::Streaming<pb::ExecInput>,
) -> Result<ExecStream, Status> {
    let mut first = inputs
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("exec: no request"))?;
    let start = first
        .start
        .as_mut()
        .ok_or_else(|| Status::invalid_argument("exec: the first message says what to run"))?;
    let name = start.target.clone();
    let task = objects
        .get_typed::<Task>(&name)
        .await
        .map_err(status_of)?
        .ok_or_else(|| Status::not_found(format!("task/{name} not found")))?;
    let status = task.status.clone().unwrap_or_default();
    let (Some(node), Some(container)) = (task.spec.node.clone(), status.container_id.clone())
    else {
        return Err(Status::failed_precondition(format!(
            "task/{name} has no container yet ({:?})",
            status.state
        )));
    };
    if status.state != shoal_api::TaskState::Running {
        return Err(Status::failed_precondition(format!(
            "task/{name} is not running (it is {:?})",
            status.state
        )));
    }
    start.target = container;
    let address = node_address(&objects, &node).await?;
    let channel = shoal_wire::node_channel(&address, &node, creds.as_ref())
        .map_err(|e| Status::unavailable(format!("node {node} at {address}: {e}")))?;
    let mut client = NodeClient::new(channel);
    let forwarded = futures::stream::once(async move { first }).chain(futures::stream::unfold(
        inputs,
        |mut inputs| async move {
            match inputs.message().await {
                Ok(Some(i)) => Some((i, inputs)),
                _ => None,
            }
        },
    ));
    // The node's output stream is the client's: nothing to add on the way.
    Ok(client.container_exec(forwarded).await?.into_inner())
}
