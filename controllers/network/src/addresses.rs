//! One network's addresses: claim and release them as the plan says, record each
//! task's in its `status.attachments`, and write the Network's status.

use std::sync::Arc;

use futures::StreamExt;
use shoal_api::meta::set_condition;
use shoal_api::{
    Attachment, ConditionStatus, Network, NetworkStatus, Node, NodeAddress, Resource, ServiceVip,
    Task,
};
use shoal_reconcile::Action;
use shoal_store::objects::{ClaimOwner, ClaimWrite, ObjectError};

use crate::plan::{address_prefix, plan};
use crate::subnet::Held;
use crate::{users, Context, NetworkError, INGRESS};

/// Claims and releases per transaction: under etcd's 100 operations.
const CHUNK: usize = 90;
/// A task whose status says this is waiting for an address.
const WAITING: &str = "waiting for an address: ";

fn owner_of<R: Resource>(obj: &R) -> ClaimOwner {
    ClaimOwner {
        kind: R::KIND.into(),
        name: obj.name().into(),
        uid: obj.metadata().uid.clone().unwrap_or_default(),
    }
}

pub(crate) async fn allocate(
    net: &Network,
    owner: &ClaimOwner,
    held: Held,
    ctx: &Context,
) -> Result<Action, NetworkError> {
    let (services, tasks) = users(ctx, net.name());
    let vip_services: Vec<_> = services
        .iter()
        .filter(|s| s.spec.endpoint_mode == shoal_api::EndpointMode::Vip)
        .collect();
    // On the mesh's network every node has an address of its own, for as long as it
    // is registered.
    let mut nodes: Vec<Arc<Node>> = if net.name() == INGRESS {
        ctx.nodes.list()
    } else {
        Vec::new()
    };
    nodes.retain(|n| n.metadata.deletion_timestamp.is_none());
    nodes.sort_by(|a, b| a.name().cmp(b.name()));
    let wanted: Vec<ClaimOwner> = vip_services
        .iter()
        .map(|s| owner_of(s.as_ref()))
        .chain(nodes.iter().map(|n| owner_of(n.as_ref())))
        .chain(tasks.iter().map(|t| owner_of(t.as_ref())))
        .collect();
    let claims = ctx.objects.claims(&address_prefix(&owner.uid)).await?;
    let cursor = ctx
        .cursors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&owner.uid)
        .copied();
    let p = plan(&held.subnet, &claims, &wanted, cursor);
    let mut claim: Vec<(String, ClaimOwner)> = p
        .allocate
        .iter()
        .map(|(o, ip)| (format!("{}{ip}", address_prefix(&owner.uid)), o.clone()))
        .collect();
    let mut release = p.release.clone();
    while !claim.is_empty() || !release.is_empty() {
        let take_release = release.len().min(CHUNK);
        let take_claim = claim.len().min(CHUNK - take_release);
        let write = ClaimWrite {
            release: release.drain(..take_release).collect(),
            claim: claim.drain(..take_claim).collect(),
        };
        ctx.objects.write_claims(write).await?;
    }
    if let Some(c) = p.cursor {
        ctx.cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner.uid.clone(), c);
    }
    let full = format!(
        "network {} has no free address ({} of {} in use)",
        net.name(),
        p.in_use,
        held.subnet.hosts()
    );
    // Every task records its address (or why it has none); failures are retried.
    let mut records = Vec::with_capacity(tasks.len());
    for t in &tasks {
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let attachment = p.addresses.get(&uid).map(|ip| Attachment {
            network: net.name().into(),
            address: held.subnet.with_host(*ip),
            vni: held.vni,
        });
        records.push(record(t.clone(), net.name(), attachment, &full, ctx));
    }
    let recorded: Vec<Result<(), ObjectError>> = futures::stream::iter(records)
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(e) = recorded.into_iter().find_map(Result::err) {
        return Err(e.into());
    }
    let mut status = net.status.clone().unwrap_or_default();
    status.subnet = Some(held.subnet.to_string());
    status.gateway = Some(held.subnet.gateway().to_string());
    status.vni = Some(held.vni);
    status.addresses_in_use = p.in_use;
    status.addresses_total = held.subnet.hosts();
    status.services = vip_services
        .iter()
        .filter_map(|s| {
            let uid = s.metadata.uid.as_deref()?;
            let vip = p.addresses.get(uid)?;
            Some(ServiceVip {
                name: s.name().into(),
                vip: vip.to_string(),
            })
        })
        .collect();
    status.nodes = nodes
        .iter()
        .filter_map(|n| {
            let uid = n.metadata.uid.as_deref()?;
            let ip = p.addresses.get(uid)?;
            Some(NodeAddress {
                name: n.name().into(),
                address: held.subnet.with_host(*ip),
            })
        })
        .collect();
    status.observed_generation = net.metadata.generation;
    let (state, reason, message) = if p.exhausted.is_empty() {
        (ConditionStatus::True, "Allocated", String::new())
    } else {
        let waiting = p.exhausted.len();
        (
            ConditionStatus::False,
            "AddressesExhausted",
            format!("{full}; {waiting} waiting"),
        )
    };
    let was_exhausted = is_exhausted(net.status.as_ref());
    write_status(net, status, state, reason, &message, ctx).await?;
    if !p.exhausted.is_empty() && !was_exhausted {
        ctx.events
            .warning(net, "AddressesExhausted", &message)
            .await;
    }
    Ok(Action::AwaitChange)
}

fn is_exhausted(status: Option<&NetworkStatus>) -> bool {
    status
        .into_iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == "Ready" && c.reason == "AddressesExhausted")
}

/// Writes `attachment` (or, without one, why) into the task's status, if it differs.
async fn record(
    task: Arc<Task>,
    network: &str,
    attachment: Option<Attachment>,
    full: &str,
    ctx: &Context,
) -> Result<(), ObjectError> {
    let waiting = format!("{WAITING}{full}");
    let apply = |t: &mut Task| -> bool {
        let status = t.status.get_or_insert_with(Default::default);
        let current = status.attachments.iter().position(|a| a.network == network);
        let mut changed = false;
        match (&attachment, current) {
            (Some(a), Some(i)) if status.attachments[i] != *a => {
                status.attachments[i] = a.clone();
                changed = true;
            }
            (Some(a), None) => {
                status.attachments.push(a.clone());
                changed = true;
            }
            (None, Some(i)) => {
                status.attachments.remove(i);
                changed = true;
            }
            _ => {}
        }
        match &attachment {
            // What this controller said while the task waited (for an address, or for
            // the network to exist) is over once it has one.
            Some(_)
                if status.message.starts_with(WAITING)
                    || status.message.starts_with(crate::missing::WAITING) =>
            {
                status.message.clear();
                changed = true;
            }
            None if status.message != waiting => {
                status.message = waiting.clone();
                changed = true;
            }
            _ => {}
        }
        changed
    };
    let mut cached = (*task).clone();
    if !apply(&mut cached) {
        return Ok(());
    }
    if modify_task(&task, ctx, apply).await? && attachment.is_none() {
        ctx.events
            .warning(task.as_ref(), "NoAddress", &waiting)
            .await;
    }
    Ok(())
}

/// Changes the stored task as `change` says (false: nothing to change), only while it
/// is the same task (same uid). Whether it wrote; a task that went is left alone.
pub(crate) async fn modify_task(
    task: &Task,
    ctx: &Context,
    mut change: impl FnMut(&mut Task) -> bool,
) -> Result<bool, ObjectError> {
    let uid = task.metadata.uid.clone();
    let written = ctx
        .objects
        .modify::<Task>(task.name(), |t| Ok(t.metadata.uid == uid && change(t)))
        .await;
    match written {
        Ok(w) => Ok(w.is_some()),
        Err(ObjectError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sets the `Ready` condition alone (the subnet could not be had, the network is in use).
pub(crate) async fn set_ready(
    net: &Network,
    ctx: &Context,
    state: ConditionStatus,
    reason: &str,
    message: &str,
) -> Result<(), NetworkError> {
    let status = net.status.clone().unwrap_or_default();
    write_status(net, status, state, reason, message, ctx).await
}

async fn write_status(
    net: &Network,
    mut status: NetworkStatus,
    state: ConditionStatus,
    reason: &str,
    message: &str,
    ctx: &Context,
) -> Result<(), NetworkError> {
    set_condition(
        &mut status.conditions,
        "Ready",
        state,
        reason,
        message,
        chrono::Utc::now(),
    );
    if net.status.as_ref() == Some(&status) {
        return Ok(());
    }
    match ctx.objects.update_status_of(net, &status).await {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
