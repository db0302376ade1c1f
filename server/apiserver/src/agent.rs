//! The agent API: registration with a heartbeat lease, the node's task stream, and
//! task status reports. Agents never touch the store; this is all they get.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use shoal_api::{
    ByteSize, DynamicObject, Node, NodeResources, NodeRole, NodeSpec, NodeState, NodeStatus,
};
use shoal_store::objects::ObjectError;
use shoal_store::{ObjectStore, StoreError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Access;
use crate::dispatcher::Dispatcher;
use crate::node_certs::NodeCerts;
use crate::pb::{self, agent_server::Agent};
use crate::peers::PeerTable;
use crate::pipelines::PipelineTable;
use crate::service::status_of;
use crate::status_writer::StatusWriter;

/// How often agents heartbeat, and how many misses make a node down.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    pub period: Duration,
    pub missed: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            period: Duration::from_secs(1),
            missed: 3,
        }
    }
}

impl HeartbeatConfig {
    pub fn ttl(&self) -> Duration {
        self.period * self.missed
    }
}

/// A stream the agent API sends a node.
type NodeStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// lastHeartbeat in Node status is refreshed at most this often, to keep heartbeats
/// from turning into a stream of writes; liveness itself is the lease.
const HEARTBEAT_STATUS_EVERY: Duration = Duration::from_secs(30);

pub struct AgentService {
    objects: ObjectStore,
    dispatcher: Arc<Dispatcher>,
    peers: Arc<PeerTable>,
    pipelines: Arc<PipelineTable>,
    status: Arc<StatusWriter>,
    heartbeat: HeartbeatConfig,
    status_written: Mutex<HashMap<String, Instant>>,
    pki: Option<Arc<crate::ClusterPki>>,
    certs: Option<Arc<NodeCerts>>,
    access: Access,
    /// The heartbeat lease this server last granted each node: a node keeps only that
    /// one alive (never another node's). A lease granted by another server (or before
    /// a restart) is not here, and its node is asked to register again.
    leases: Mutex<HashMap<String, shoal_store::LeaseId>>,
    heartbeats: Arc<std::sync::atomic::AtomicU64>,
    values: Option<Arc<crate::Values>>,
}

fn check_node_name(name: &str) -> Result<(), Status> {
    shoal_api::meta::check_name(name, true)
        .map_err(|why| Status::invalid_argument(format!("node name: {why}")))
}

/// What a joining node claims, checked before anything is stored: a Node the server
/// could not read back (a `NaN` cpu) would stay `ready` with no heartbeat behind it.
fn check_claims(req: &pb::RegisterRequest) -> Result<(), Status> {
    let mut problems = Vec::new();
    if let Err(why) = shoal_api::meta::check_name(&req.name, true) {
        problems.push(format!("name: {why}"));
    }
    if !req.cpu.is_finite() || req.cpu < 0.0 {
        problems.push(format!(
            "cpu: {} is not a number of CPUs (finite, at least 0)",
            req.cpu
        ));
    }
    let address = req.address.as_str();
    if !address.is_empty()
        && address.parse::<std::net::IpAddr>().is_err()
        && address.parse::<std::net::SocketAddr>().is_err()
    {
        problems.push(format!(
            "address: {address:?} is not an IP address or IP:port"
        ));
    }
    if !matches!(req.role.as_str(), "" | "manager" | "worker") {
        problems.push(format!(
            "role: {:?} is not a role: manager or worker",
            req.role
        ));
    }
    for (key, value) in &req.labels {
        let check = shoal_api::meta::check_label_key(key)
            .and_then(|()| shoal_api::meta::check_label_value(value));
        if let Err(why) = check {
            problems.push(format!("labels[{key:?}]: {why}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "node {:?} cannot join: {}",
            req.name,
            problems.join("; ")
        )))
    }
}

impl AgentService {
    /// `status` writes the task status reports; it reads tasks from `dispatcher`.
    pub fn new(
        objects: ObjectStore,
        dispatcher: Arc<Dispatcher>,
        peers: Arc<PeerTable>,
        pipelines: Arc<PipelineTable>,
        status: Arc<StatusWriter>,
        heartbeat: HeartbeatConfig,
    ) -> Self {
        AgentService {
            objects,
            dispatcher,
            peers,
            pipelines,
            status,
            heartbeat,
            status_written: Mutex::new(HashMap::new()),
            pki: None,
            certs: None,
            access: Access::Open,
            leases: Mutex::new(HashMap::new()),
            heartbeats: Arc::default(),
            values: None,
        }
    }

    /// Hands nodes the Secrets and Configs of their tasks from `values`.
    pub fn with_values(mut self, values: Arc<crate::Values>) -> Self {
        self.values = Some(values);
        self
    }

    /// How many heartbeats this service has renewed; `Info` reports it.
    pub fn heartbeats(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.heartbeats.clone()
    }

    /// Joins nodes with tokens through `pki`, keeps their certificates in `certs`,
    /// and checks every call's identity by `access`.
    pub fn with_pki(
        mut self,
        pki: Arc<crate::ClusterPki>,
        certs: Arc<NodeCerts>,
        access: Access,
    ) -> Self {
        self.pki = Some(pki);
        self.certs = Some(certs);
        self.access = access;
        self
    }

    /// `rx` as the node's stream, ended with PERMISSION_DENIED the moment the node is
    /// revoked: a removed node keeps nothing open. Polled in the stream's own task, so
    /// a message takes no extra hop on its way to the node.
    fn until_revoked<T: Send + 'static>(
        &self,
        node: &str,
        rx: tokio::sync::mpsc::Receiver<Result<T, Status>>,
    ) -> NodeStream<T> {
        let stream = ReceiverStream::new(rx);
        let Access::Certified(certs) = &self.access else {
            return Box::pin(stream);
        };
        let revoked = Box::pin(certs.revoked(node));
        let why = format!("node {node:?}: its certificate is revoked (the node was removed)");
        Box::pin(futures::stream::unfold(
            Some((stream, revoked)),
            move |state| {
                let why = why.clone();
                async move {
                    let (mut stream, mut revoked) = state?;
                    tokio::select! {
                        item = stream.next() => item.map(|i| (i, Some((stream, revoked)))),
                        () = &mut revoked => Some((Err(Status::permission_denied(why)), None)),
                    }
                }
            },
        ))
    }

    fn certs(&self) -> Result<&NodeCerts, Status> {
        self.certs.as_deref().ok_or_else(crate::pki::no_pki)
    }

    fn node_status(req: &pb::RegisterRequest, previous: Option<NodeStatus>) -> NodeStatus {
        let mut status = previous.unwrap_or_default();
        status.state = NodeState::Ready;
        status.address = (!req.address.is_empty()).then(|| req.address.clone());
        status.resources = Some(NodeResources {
            cpu: req.cpu,
            memory: ByteSize(req.memory_bytes),
        });
        status.last_heartbeat = Some(Utc::now());
        status
    }

    async fn upsert_node(&self, req: &pb::RegisterRequest) -> Result<(), ObjectError> {
        // Labels the node claims are added to those it has (users may add more); the
        // status is what it says now.
        let update = |node: &mut Node| {
            node.metadata.labels.extend(req.labels.clone());
            node.status = Some(Self::node_status(req, node.status.take()));
            Ok(true)
        };
        match self.objects.modify::<Node>(&req.name, update).await {
            Err(ObjectError::NotFound { .. }) => {}
            other => return other.map(|_| ()),
        }
        let role = if req.role == "manager" {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        let mut node = Node::new(
            &req.name,
            NodeSpec {
                role,
                ..Default::default()
            },
        );
        node.metadata.labels = req.labels.clone().into_iter().collect();
        node.status = Some(Self::node_status(req, None));
        let obj =
            DynamicObject::from_typed(&node).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        match self.objects.create(obj, None).await {
            Ok(_) => Ok(()),
            // Registered meanwhile by another request of its own: update that one.
            Err(ObjectError::AlreadyExists { .. }) => self
                .objects
                .modify::<Node>(&req.name, update)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    async fn touch_heartbeat_status(&self, node: &str) {
        {
            let mut written = self
                .status_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match written.get(node) {
                Some(at) if at.elapsed() < HEARTBEAT_STATUS_EVERY => return,
                _ => {
                    written.insert(node.to_string(), Instant::now());
                }
            }
        }
        if let Ok(Some(n)) = self.objects.get_typed::<Node>(node).await {
            let mut status = n.status.clone().unwrap_or_default();
            status.last_heartbeat = Some(Utc::now());
            // A lost race only delays the timestamp; the lease is what counts.
            let _ = self.objects.update_status_of(&n, &status).await;
        }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    #[tracing::instrument(skip_all, fields(node = %req.get_ref().name))]
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        crate::pki::join_rpc(self.pki.as_deref(), self.certs()?, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn cluster_ca(
        &self,
        _req: Request<pb::ClusterCaRequest>,
    ) -> Result<Response<pb::ClusterCaResponse>, Status> {
        crate::pki::cluster_ca_rpc(self.pki.as_deref()).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node))]
    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let node = req.get_ref().node.clone();
        let role = self
            .access
            .node(&req, &node)
            .await?
            .ok_or_else(|| Status::failed_precondition("this server runs without TLS"))?;
        let identity = shoal_pki::Identity { role, name: node };
        crate::pki::renew_rpc(
            self.pki.as_deref(),
            self.certs()?,
            identity,
            req.into_inner(),
        )
        .await
        .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().name))]
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let role = self.access.node(&req, &req.get_ref().name).await?;
        let req = req.into_inner();
        check_claims(&req)?;
        if req.role == "manager" && role == Some(shoal_pki::Role::Node) {
            return Err(Status::permission_denied(format!(
                "node {:?}: a worker's certificate cannot register a manager (join with a manager token)",
                req.name
            )));
        }
        // The heartbeat key goes first: a Node that shows up ready without one would be
        // seen as down by the node controller.
        let lease = self
            .objects
            .start_heartbeat(&req.name, self.heartbeat.ttl())
            .await
            .map_err(status_of)?;
        self.upsert_node(&req).await.map_err(status_of)?;
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.name.clone(), lease);
        tracing::info!(lease, "node registered");
        Ok(Response::new(pb::RegisterResponse {
            lease,
            heartbeat_period_ms: self.heartbeat.period.as_millis() as u64,
            down_after_ms: self.heartbeat.ttl().as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.access.node(&req, &req.get_ref().node).await?;
        let req = req.into_inner();
        if !matches!(self.access, Access::Open) {
            let granted = self
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&req.node)
                .copied();
            if granted != Some(req.lease) {
                return Err(Status::not_found(format!(
                    "node {}: lease {} is not the one this server granted it; register again",
                    req.node, req.lease
                )));
            }
        }
        match self.objects.keep_heartbeat(req.lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => {
                return Err(Status::not_found(format!(
                    "node {}: heartbeat lease expired; register again",
                    req.node
                )))
            }
            Err(e) => return Err(status_of(e.into())),
        }
        self.heartbeats
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.touch_heartbeat_status(&req.node).await;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    type AssignmentsStream = NodeStream<pb::Assignment>;

    async fn assignments(
        &self,
        req: Request<pb::AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        self.access.node(&req, &req.get_ref().node).await?;
        let node = req.into_inner().node;
        check_node_name(&node)?;
        let mut rx = self.dispatcher.subscribe(&node).await;
        let (tx, out) = tokio::sync::mpsc::channel(256);
        let out = self.until_revoked(&node, out);
        tokio::spawn(async move {
            while let Some(a) = rx.recv().await {
                if tx.send(Ok(a)).await.is_err() {
                    return;
                }
            }
            // The dispatcher dropped us (too slow); the agent reconnects and resyncs.
            let _ = tx
                .send(Err(Status::aborted(
                    "assignment stream fell behind; reconnect",
                )))
                .await;
        });
        Ok(Response::new(out))
    }

    type PeersStream = NodeStream<pb::PeerSet>;

    async fn peers(
        &self,
        req: Request<pb::PeersRequest>,
    ) -> Result<Response<Self::PeersStream>, Status> {
        self.access.node(&req, &req.get_ref().node).await?;
        let node = req.into_inner().node;
        check_node_name(&node)?;
        Ok(Response::new(
            self.until_revoked(&node, self.peers.subscribe(&node)),
        ))
    }

    type PipelinesStream = NodeStream<pb::PipelineSet>;

    async fn pipelines(
        &self,
        req: Request<pb::PipelinesRequest>,
    ) -> Result<Response<Self::PipelinesStream>, Status> {
        self.access.node(&req, &req.get_ref().node).await?;
        let node = req.into_inner().node;
        check_node_name(&node)?;
        Ok(Response::new(
            self.until_revoked(&node, self.pipelines.subscribe(&node)),
        ))
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node, reports = req.get_ref().reports.len()))]
    async fn report_pipelines(
        &self,
        req: Request<pb::ReportPipelinesRequest>,
    ) -> Result<Response<pb::ReportPipelinesResponse>, Status> {
        self.access.node(&req, &req.get_ref().node).await?;
        let req = req.into_inner();
        check_node_name(&req.node)?;
        for e in self.pipelines.report(&req.node, req.reports).await {
            tracing::debug!(node = %req.node, error = %e, "pipeline report not written");
        }
        Ok(Response::new(pb::ReportPipelinesResponse {}))
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node, reports = req.get_ref().reports.len()))]
    async fn report_status(
        &self,
        req: Request<pb::ReportStatusRequest>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        self.access.node(&req, &req.get_ref().node).await?;
        let req = req.into_inner();
        check_node_name(&req.node)?;
        let errors = self.status.report(&req.node, req.reports).await;
        Ok(Response::new(pb::ReportStatusResponse { errors }))
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node, task = %req.get_ref().task))]
    async fn task_files(
        &self,
        req: Request<pb::TaskFilesRequest>,
    ) -> Result<Response<pb::TaskFilesResponse>, Status> {
        self.access.node(&req, &req.get_ref().node).await?;
        let req = req.into_inner();
        check_node_name(&req.node)?;
        crate::values::kept(&self.values)?
            .task_files(&req.node, &req.task)
            .await
            .map(Response::new)
    }
}
