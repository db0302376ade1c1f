//! The network controller: IPAM for overlay networks, as Swarm's allocator does it, but
//! level-triggered and claimed in the store. Per Network it holds a subnet (the
//! manifest's, or one carved from the default pool), a VXLAN id from 4096, a gateway,
//! a virtual IP per attached `endpointMode: vip` service and an address per live task,
//! and writes them to the Network's status and each task's `status.attachments`.
//!
//! # Guarantees
//! - Nothing is handed out twice: every subnet, VXLAN id and address is a claim key
//!   created only where absent (`shoal_store::objects::claims`), so not even two
//!   leaders at once can give one address to two tasks.
//! - Nothing leaks: each pass computes who should hold what from the Services and
//!   Tasks as they are, and releases every other claim of the network. A Network holds
//!   the `shoal.dev/network` finalizer until no service or live task uses it and its
//!   claims are released.
//! - Exhaustion is loud: a task left without an address says why in its status, one
//!   Warning Event names the network, and the Network's `Ready` condition is False.

mod addresses;
pub mod ipam;
mod missing;
pub mod plan;
mod subnet;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::{Network, Node, Resource, Service, Task, TaskState};
use shoal_reconcile::{
    Action, CancellationToken, Change, Controller, ControllerConfig, EventRecorder, Informers,
    Reader,
};
use shoal_store::objects::{ClaimOwner, ObjectError};
use shoal_store::ObjectStore;

pub use ipam::Subnet;

/// Held by every Network until its addresses, subnet and VXLAN id are released.
pub const FINALIZER: &str = "shoal.dev/network";
/// The network published ports use, made at start as Swarm makes its `ingress`.
pub const INGRESS: &str = shoal_api::INGRESS_NETWORK;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Store(#[from] ObjectError),
}

/// Where networks without a subnet in their manifest get one (Swarm's
/// `--default-addr-pool` and `--default-addr-pool-mask-length`).
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub pool: Subnet,
    pub subnet_size: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pool: Subnet::parse("10.0.0.0/8").unwrap_or_else(|_| unreachable!()),
            subnet_size: 24,
        }
    }
}

pub(crate) struct Context {
    objects: ObjectStore,
    tasks: Reader<Task>,
    services: Reader<Service>,
    nodes: Reader<Node>,
    events: EventRecorder,
    config: Config,
    /// Per network uid, where the next address is looked for.
    cursors: Mutex<HashMap<String, Ipv4Addr>>,
}

/// Runs the network controller until `shutdown`.
pub async fn run(informers: Informers, config: Config, shutdown: CancellationToken) {
    let objects = informers.objects().clone();
    ensure_ingress(&objects).await;
    let ctx = Arc::new(Context {
        events: EventRecorder::new(objects.clone(), "network-controller"),
        objects,
        tasks: informers.get::<Task>().reader(),
        services: informers.get::<Service>().reader(),
        nodes: informers.get::<Node>().reader(),
        config,
        cursors: Mutex::default(),
    });
    let networks = informers.get::<Network>().reader();
    let sweeping = ctx.clone();
    let controller = Controller::<Network>::new(
        &informers,
        ControllerConfig {
            min_interval: Duration::from_millis(50),
            ..ControllerConfig::named("network")
        },
    )
    .watches_changes(|change: &Change<Task>| {
        let (Change::Applied(t) | Change::Deleted(t)) = change;
        task_networks(t)
    })
    .watches_changes(|change: &Change<Service>| {
        let (Change::Applied(s) | Change::Deleted(s)) = change;
        s.spec
            .container
            .networks
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    })
    // Every node holds an address on the routing mesh's network.
    .watches_changes(|_: &Change<Node>| vec![INGRESS.to_string()])
    .with_background(move |token| Box::pin(missing::sweep(sweeping, networks, token)));
    controller
        .run(reconcile, |_, _, _| Action::Backoff, ctx, shutdown)
        .await
}

/// The networks a task asks for and those it holds an address on.
fn task_networks(t: &Task) -> Vec<String> {
    let asked = t
        .spec
        .container
        .networks
        .iter()
        .map(|n| n.name().to_string());
    let held = t
        .status
        .iter()
        .flat_map(|s| s.attachments.iter().map(|a| a.network.clone()));
    asked.chain(held).collect()
}

/// Creates the `ingress` network once, if it is not there.
async fn ensure_ingress(objects: &ObjectStore) {
    let ingress = Network::new(INGRESS, shoal_api::NetworkSpec::default());
    let ingress = match shoal_api::DynamicObject::from_typed(&ingress) {
        Ok(obj) => obj,
        Err(e) => return tracing::warn!(error = %e, "cannot make the ingress network"),
    };
    match objects.create(ingress, None).await {
        Ok(_) => tracing::info!("created the ingress network"),
        Err(ObjectError::AlreadyExists { .. }) => {}
        Err(e) => tracing::warn!(error = %e, "cannot create the ingress network"),
    }
}

async fn reconcile(net: Arc<Network>, ctx: Arc<Context>) -> Result<Action, NetworkError> {
    let uid = net.metadata.uid.clone().unwrap_or_default();
    if net.metadata.deletion_timestamp.is_some() {
        return subnet::finish_deletion(&net, &uid, &ctx).await;
    }
    let net = match ensure_finalizer(&net, &ctx).await? {
        Some(updated) => Arc::new(updated),
        None => net,
    };
    let owner = ClaimOwner {
        kind: Network::KIND.into(),
        name: net.name().into(),
        uid: uid.clone(),
    };
    match subnet::ensure(&net, &owner, &ctx).await? {
        Some(held) => addresses::allocate(&net, &owner, held, &ctx).await,
        // Waiting for a subnet: another network's deletion may free one.
        None => Ok(Action::requeue(Duration::from_secs(10))),
    }
}

async fn ensure_finalizer(net: &Network, ctx: &Context) -> Result<Option<Network>, NetworkError> {
    if net.metadata.finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let uid = net.metadata.uid.clone();
    let updated = ctx
        .objects
        .modify::<Network>(net.name(), |n| {
            if n.metadata.uid != uid || n.metadata.finalizers.iter().any(|f| f == FINALIZER) {
                return Ok(false);
            }
            n.metadata.finalizers.push(FINALIZER.into());
            Ok(true)
        })
        .await?;
    Ok(updated)
}

/// Tasks that need an address: not ended, or ended but asked to start again.
pub(crate) fn is_live(t: &Task) -> bool {
    let state = t.status.as_ref().map_or(TaskState::Pending, |s| s.state);
    !state.is_terminal() && t.metadata.deletion_timestamp.is_none()
}

/// The live tasks and vip services on network `name`.
pub(crate) fn users(ctx: &Context, name: &str) -> (Vec<Arc<Service>>, Vec<Arc<Task>>) {
    let on = |nets: &[shoal_api::NetworkRef]| nets.iter().any(|n| n.name() == name);
    let mut services: Vec<Arc<Service>> = ctx
        .services
        .list()
        .into_iter()
        .filter(|s| on(&s.spec.container.networks) && s.metadata.deletion_timestamp.is_none())
        .collect();
    services.sort_by(|a, b| a.name().cmp(b.name()));
    let mut tasks: Vec<Arc<Task>> = ctx
        .tasks
        .list()
        .into_iter()
        .filter(|t| on(&t.spec.container.networks) && is_live(t))
        .collect();
    tasks.sort_by(|a, b| {
        (a.metadata.creation_timestamp, a.name()).cmp(&(b.metadata.creation_timestamp, b.name()))
    });
    (services, tasks)
}
