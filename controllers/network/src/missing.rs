//! Tasks that name a network that does not exist. The API server refuses such an
//! apply, but a GitSync writes objects one by one and a task may be applied before
//! its network: such a task is not sent to a node (it has no address), so it must not
//! wait in silence. Its status says which network it waits for, with one Warning
//! Event, until the network appears and the controller gives it an address.

use std::sync::Arc;
use std::time::Duration;

use shoal_api::{Network, Resource, Task};
use shoal_reconcile::{CancellationToken, Reader};
use shoal_store::objects::ObjectError;

use crate::addresses::modify_task;
use crate::{is_live, Context};

const EVERY: Duration = Duration::from_secs(2);
pub(crate) const WAITING: &str = "waiting for network ";

/// Checks every live task's networks every two seconds until `shutdown`.
pub(crate) async fn sweep(
    ctx: Arc<Context>,
    networks: Reader<Network>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = async { networks.wait_ready().await; ctx.tasks.wait_ready().await } => {}
        _ = shutdown.cancelled() => return,
    }
    loop {
        for task in ctx.tasks.list().into_iter().filter(|t| is_live(t)) {
            let missing = task
                .spec
                .container
                .networks
                .iter()
                .map(|n| n.name())
                .find(|n| networks.get(n).is_none());
            if let Some(name) = missing {
                if let Err(e) = mark(&task, name, &ctx).await {
                    tracing::warn!(task = task.name(), error = %e, "cannot mark a task waiting for its network");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn mark(task: &Arc<Task>, network: &str, ctx: &Context) -> Result<(), ObjectError> {
    let message = format!("{WAITING}{network}: it does not exist");
    let said = |t: &Task| t.status.as_ref().is_some_and(|s| s.message == message);
    if said(task) {
        return Ok(());
    }
    let written = modify_task(task, ctx, |t| {
        if said(t) {
            return false;
        }
        t.status.get_or_insert_with(Default::default).message = message.clone();
        true
    })
    .await?;
    if written {
        ctx.events
            .warning(task.as_ref(), "NetworkNotFound", &message)
            .await;
    }
    Ok(())
}
