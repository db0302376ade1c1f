//! The gRPC handlers. Each one decodes, checks, calls the object layer, and maps errors
//! to gRPC codes a client can act on.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use shoal_api::object::KindDesc;
use shoal_api::{kind_by_name, DynamicObject, Selector};
use shoal_store::objects::{DeleteOutcome, ObjectError};
use shoal_store::{ObjectStore, Store};
use tonic::{Request, Response, Status};

use crate::pb::{self, api_server::Api};
use crate::watch::{self, watch_stream};
use crate::watch_cache::WatchCache;
use crate::CONTROLLER_LEADER_KEY;

mod refs;

/// Most manifests one apply may carry.
const MAX_APPLY: usize = 10_000;

#[derive(Clone)]
pub struct ApiService {
    objects: ObjectStore,
    /// For the controllers' leader key, which is the leader election's, not an object.
    store: Arc<dyn Store>,
    watches: WatchCache,
    server_id: String,
    pki: Option<Arc<crate::ClusterPki>>,
    certs: Option<Arc<crate::node_certs::NodeCerts>>,
    /// How this server reaches nodes' APIs: as itself, over mutual TLS.
    node_creds: Option<shoal_wire::Credentials>,
    heartbeats: Arc<std::sync::atomic::AtomicU64>,
    values: Option<Arc<crate::Values>>,
}

impl ApiService {
    /// `watch_buffer`: changes a client watch may fall behind the watch cache.
    pub fn new(store: Arc<dyn Store>, server_id: String, watch_buffer: usize) -> Self {
        let objects = ObjectStore::new(store.clone());
        ApiService {
            store,
            watches: WatchCache::new(objects.clone(), watch_buffer),
            objects,
            server_id,
            pki: None,
            certs: None,
            node_creds: None,
            heartbeats: Arc::default(),
            values: None,
        }
    }

    /// Keeps Secrets and Configs in `values`.
    pub fn with_values(mut self, values: Arc<crate::Values>) -> Self {
        self.values = Some(values);
        self
    }

    fn values(&self) -> Result<&crate::Values, Status> {
        crate::values::kept(&self.values)
    }

    /// Reports `heartbeats` (the agent service's count) in `Info`.
    pub fn with_heartbeats(mut self, heartbeats: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.heartbeats = heartbeats;
        self
    }

    /// Hands out join tokens from `pki`, revokes a removed node's certificates in
    /// `certs`, and reaches nodes' APIs with `node_creds` (None: plaintext).
    pub fn with_pki(
        mut self,
        pki: Arc<crate::ClusterPki>,
        certs: Arc<crate::node_certs::NodeCerts>,
        node_creds: Option<shoal_wire::Credentials>,
    ) -> Self {
        self.pki = Some(pki);
        self.certs = Some(certs);
        self.node_creds = node_creds;
        self
    }
}

pub(crate) fn status_of(e: ObjectError) -> Status {
    match e {
        ObjectError::NotFound { .. } => Status::not_found(e.to_string()),
        ObjectError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        ObjectError::Conflict { .. } | ObjectError::Contended { .. } => {
            Status::aborted(e.to_string())
        }
        ObjectError::Invalid(_) => Status::invalid_argument(e.to_string()),
        ObjectError::Store(shoal_store::StoreError::Unavailable(_)) => {
            Status::unavailable(e.to_string())
        }
        ObjectError::Store(shoal_store::StoreError::Compacted { .. }) => {
            Status::out_of_range(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

pub(crate) fn kind_of(name: &str) -> Result<&'static KindDesc, Status> {
    kind_by_name(name).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown kind {name:?}; known kinds: {}",
            shoal_api::object::kind_names()
        ))
    })
}

pub(crate) fn selector_of(text: &str) -> Result<Selector, Status> {
    Selector::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
}

pub(crate) fn to_json(obj: &DynamicObject) -> Result<String, Status> {
    serde_json::to_string(obj).map_err(|e| Status::internal(e.to_string()))
}

/// Whether an Event is about `reference` ("Kind/name").
pub(crate) fn involves(obj: &DynamicObject, reference: &str) -> bool {
    if reference.is_empty() {
        return true;
    }
    let Some(involved) = obj.body.get("involvedObject") else {
        return false;
    };
    let kind = involved
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = involved
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match reference.split_once('/') {
        Some((k, n)) => {
            let k = kind_by_name(k).map_or(k, |d| d.kind);
            k == kind && n == name
        }
        None => false,
    }
}

/// Decodes and validates a manifest the client sent, as if it came from a file.
fn check_manifest(m: &pb::Manifest) -> Result<DynamicObject, Vec<String>> {
    let source = if m.source.is_empty() {
        "request"
    } else {
        &m.source
    };
    let value: Value = shoal_api::strict_json::from_str(&m.json)
        .map_err(|e| vec![format!("{source}: not JSON: {e}")])?;
    let obj = shoal_api::yaml::decode_value(value).map_err(|problems| {
        shoal_api::yaml::problem_lines(problems)
            .into_iter()
            .map(|line| format!("{source}: {line}"))
            .collect::<Vec<_>>()
    })?;
    let desc = obj
        .kind_desc()
        .ok_or_else(|| vec![format!("{source}: unknown kind")])?;
    if let Some(kind) = crate::values::file_kind(desc) {
        return Err(vec![format!(
            "{source}: {} objects are made with `shoal {} create NAME -f FILE`, which takes the value; a manifest cannot carry one",
            desc.kind,
            kind.kind().to_ascii_lowercase()
        )]);
    }
    if !desc.user_writable {
        return Err(vec![format!(
            "{source}: {} objects are written by shoal itself and cannot be applied",
            desc.kind
        )]);
    }
    Ok(obj)
}

#[tonic::async_trait]
impl Api for ApiService {
    #[tracing::instrument(skip_all, fields(manifests = req.get_ref().manifests.len(), dry_run = req.get_ref().dry_run))]
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let req = req.into_inner();
        if let Some(first_over) = req.manifests.get(MAX_APPLY) {
            return Err(Status::invalid_argument(format!(
                "{}: past the limit of {MAX_APPLY} manifests in one apply ({} in all); apply them in parts",
                first_over.source,
                req.manifests.len()
            )));
        }
        let mut objects = Vec::with_capacity(req.manifests.len());
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for m in &req.manifests {
            match check_manifest(m) {
                Ok(obj) => {
                    if !seen.insert((obj.kind.clone(), obj.metadata.name.clone())) {
                        problems.push(format!(
                            "{}: {} appears twice in this apply",
                            m.source,
                            obj.reference()
                        ));
                    }
                    objects.push(obj);
                }
                Err(list) => problems.extend(list),
            }
        }
        for (m, obj) in req.manifests.iter().zip(&objects) {
            if obj.kind == "Node" {
                let exists = self
                    .objects
                    .get(kind_of("Node")?, obj.name())
                    .await
                    .map_err(status_of)?
                    .is_some();
                if !exists {
                    problems.push(format!(
                        "{}: node/{} has not joined: nodes join by running `shoal agent`; apply can label, pause or drain a node that has",
                        m.source,
                        obj.name()
                    ));
                }
            }
        }
        if problems.is_empty() {
            problems.extend(self.missing_references(&req.manifests, &objects).await?);
        }
        if !problems.is_empty() {
            return Err(Status::invalid_argument(problems.join("\n")));
        }
        // One transaction: a crash or a failure leaves all of the apply or none of it.
        let applied = self
            .objects
            .apply_all(objects, req.dry_run)
            .await
            .map_err(|e| {
                let source = req.manifests.get(e.index).map_or("request", |m| &m.source);
                let status = status_of(e.error);
                Status::new(status.code(), format!("{source}: {}", status.message()))
            })?;
        let mut results = Vec::with_capacity(applied.len());
        for (outcome, stored) in applied {
            let (kind, name) = (stored.kind.clone(), stored.metadata.name.clone());
            tracing::info!(%kind, %name, %outcome, "applied");
            results.push(pb::ApplyResult {
                kind,
                name,
                outcome: outcome.to_string(),
                json: to_json(&stored)?,
            });
        }
        Ok(Response::new(pb::ApplyResponse { results }))
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind, name = %req.get_ref().name))]
    async fn get(
        &self,
        req: Request<pb::GetRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = req.into_inner();
        let kind = kind_of(&req.kind)?;
        match self.objects.get(kind, &req.name).await.map_err(status_of)? {
            Some(obj) => Ok(Response::new(pb::ObjectResponse {
                json: to_json(&obj)?,
            })),
            None => Err(Status::not_found(format!(
                "{}/{} not found",
                kind.kind, req.name
            ))),
        }
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind))]
    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let req = req.into_inner();
        let kind = kind_of(&req.kind)?;
        let selector = selector_of(&req.label_selector)?;
        let (items, revision) = self.objects.list(kind).await.map_err(status_of)?;
        let items = items
            .iter()
            .filter(|o| selector.matches(&o.metadata.labels) && involves(o, &req.involved_object))
            .map(to_json)
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListResponse { items, revision }))
    }

    #[tracing::instrument(skip_all)]
    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let value: Value = shoal_api::strict_json::from_str(&req.get_ref().json)
            .map_err(|e| Status::invalid_argument(format!("not JSON: {e}")))?;
        let obj = shoal_api::yaml::decode_value(value)
            .map_err(|p| Status::invalid_argument(shoal_api::yaml::problem_lines(p).join("\n")))?;
        let updated = self.objects.update(obj, None).await.map_err(status_of)?;
        Ok(Response::new(pb::ObjectResponse {
            json: to_json(&updated)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind, name = %req.get_ref().name))]
    async fn patch(
        &self,
        req: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = req.into_inner();
        let kind = kind_of(&req.kind)?;
        let patch: Value = shoal_api::strict_json::from_str(&req.merge_patch_json)
            .map_err(|e| Status::invalid_argument(format!("the merge patch is not JSON: {e}")))?;
        let patched = self
            .objects
            .patch(kind, &req.name, &patch)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ObjectResponse {
            json: to_json(&patched)?,
        }))
    }

    /// Refused: status is written by shoal itself, its controllers (in the server) and
    /// the agents reporting their own tasks, as Kubernetes keeps it behind the status
    /// subresource. Until clients have identities, no client may write it.
    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind, name = %req.get_ref().name))]
    async fn update_status(
        &self,
        req: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = req.into_inner();
        Err(Status::permission_denied(format!(
            "{}/{}: status is written by shoal's controllers and by the agents of each node, not by clients",
            req.kind, req.name
        )))
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind, name = %req.get_ref().name))]
    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = req.into_inner();
        let kind = kind_of(&req.kind)?;
        if let Some(value_kind) = crate::values::file_kind(kind) {
            let obj = self.values()?.delete(value_kind, &req.name).await?;
            tracing::info!(kind = kind.kind, name = %req.name, "delete");
            return Ok(Response::new(pb::DeleteResponse {
                outcome: "deleted".into(),
                json: to_json(&obj)?,
            }));
        }
        if kind.kind == shoal_api::kind_of::<shoal_api::Node>().kind {
            // Revoked first: the node's agent must not register it again meanwhile.
            if let Some(certs) = &self.certs {
                certs.revoke(&req.name).await.map_err(status_of)?;
                tracing::info!(node = %req.name, "node certificates revoked");
            }
        }
        let (outcome, obj) = match self
            .objects
            .delete(kind, &req.name)
            .await
            .map_err(status_of)?
        {
            DeleteOutcome::Deleted(o) => ("deleted", o),
            DeleteOutcome::Pending(o) => ("pending", o),
        };
        tracing::info!(kind = kind.kind, name = %req.name, outcome, "delete");
        Ok(Response::new(pb::DeleteResponse {
            outcome: outcome.into(),
            json: to_json(&obj)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind, name = %req.get_ref().name))]
    async fn rename(
        &self,
        req: Request<pb::RenameRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = req.into_inner();
        let kind = kind_of(&req.kind)?;
        if kind.kind != "Task" {
            return Err(Status::invalid_argument("only tasks can be renamed"));
        }
        shoal_api::meta::check_name(&req.new_name, true)
            .map_err(|why| Status::invalid_argument(format!("{:?}: {why}", req.new_name)))?;
        let not_found = || Status::not_found(format!("task/{} not found", req.name));
        let old = self
            .objects
            .get(kind, &req.name)
            .await
            .map_err(status_of)?
            .ok_or_else(not_found)?;
        if let Some(svc) = old.metadata.labels.get(shoal_api::labels::SERVICE) {
            return Err(Status::failed_precondition(format!(
                "task/{} belongs to service/{svc}, whose tasks are named by slot",
                req.name
            )));
        }
        // `web.7` is service/web's slot 7 (or its history): a standalone task there would
        // be taken for one of the service's.
        if let Some((prefix, _)) = req.new_name.split_once('.') {
            let service = self
                .objects
                .get(kind_of("Service")?, prefix)
                .await
                .map_err(status_of)?;
            if service.is_some() {
                return Err(Status::failed_precondition(format!(
                    "{:?}: names {prefix}.* are service/{prefix}'s tasks (SERVICE.SLOT); choose another",
                    req.new_name
                )));
            }
        }
        // The same object (uid and all) under the new name, the old name freed in the
        // same step; the node keys containers by uid, so the container carries on.
        let mut renamed = old;
        renamed.metadata.name = req.new_name.clone();
        let created = self
            .objects
            .rename(&req.name, renamed)
            .await
            .map_err(status_of)?;
        tracing::info!(new_name = %req.new_name, "rename");
        Ok(Response::new(pb::ObjectResponse {
            json: to_json(&created)?,
        }))
    }

    type WatchStream = watch::ResponseStream;
    type LogsStream = crate::logs::LogsStream;
    type ExecStream = crate::exec::ExecStream;

    #[tracing::instrument(skip_all)]
    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        crate::exec::exec_stream(
            self.objects.clone(),
            self.node_creds.clone(),
            req.into_inner(),
        )
        .await
        .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind, name = %req.get_ref().name))]
    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        crate::logs::logs_stream(
            self.objects.clone(),
            self.node_creds.clone(),
            req.into_inner(),
        )
        .await
        .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind))]
    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        watch_stream(&self.watches, self.objects.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(role = %req.get_ref().role))]
    async fn join_token(
        &self,
        req: Request<pb::JoinTokenRequest>,
    ) -> Result<Response<pb::JoinTokenResponse>, Status> {
        crate::pki::token_rpc(self.pki.as_deref(), req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(kind = %req.get_ref().kind, name = %req.get_ref().name))]
    async fn create_value(
        &self,
        req: Request<pb::CreateValueRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let created = self.values()?.create(req.into_inner()).await?;
        Ok(Response::new(pb::ObjectResponse {
            json: to_json(&created)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_value_key(
        &self,
        _: Request<pb::RotateValueKeyRequest>,
    ) -> Result<Response<pb::RotateValueKeyResponse>, Status> {
        self.values()?.rotate().await.map(Response::new)
    }

    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let leader = self
            .store
            .get(CONTROLLER_LEADER_KEY)
            .await
            .map_err(|e| status_of(e.into()))?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default();
        Ok(Response::new(pb::InfoResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            store: self.objects.backend().into(),
            server_id: self.server_id.clone(),
            leader,
            heartbeats: self.heartbeats.load(std::sync::atomic::Ordering::Relaxed),
        }))
    }
}
