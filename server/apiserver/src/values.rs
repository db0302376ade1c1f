//! Secrets and Configs on the server: made with their value (sealed in the store's
//! envelope, `shoal_pki::Keyring`), handed to a node only for a task of its that is
//! meant to run and names them (Swarm's dispatcher rule), removed only when nothing
//! uses them, and their value key rotated on demand. No value is ever logged: spans
//! name values, never their bytes.

use std::collections::BTreeSet;

use shoal_api::{
    kind_of, Config, DesiredState, DynamicObject, FileKind, KindDesc, Resource, Secret, Service,
    Task, ValueSpec, ValueStatus, MAX_VALUE_BYTES,
};
use shoal_pki::{sealed_under, Keyring, PkiError, SealKey};
use shoal_store::objects::{ObjectError, KEYRING_RECORD};
use shoal_store::ObjectStore;
use tonic::Status;

use crate::pb;
use crate::service::status_of;

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl From<ValueError> for Status {
    fn from(e: ValueError) -> Status {
        match e {
            ValueError::Object(e) => status_of(e),
            ValueError::Pki(e) => Status::internal(e.to_string()),
        }
    }
}

/// The label of a stored value from its path (`secrets/db-pass`).
fn label_of_path(path: &str) -> Option<String> {
    let (plural, name) = path.split_once('/')?;
    let kind = file_kind(shoal_api::kind_by_name(plural)?)?;
    Some(kind.reference(name))
}

/// Secret or Config, or None for any other kind.
pub(crate) fn file_kind(desc: &KindDesc) -> Option<FileKind> {
    match desc.kind {
        k if k == Secret::KIND => Some(FileKind::Secret),
        k if k == Config::KIND => Some(FileKind::Config),
        _ => None,
    }
}

fn desc(kind: FileKind) -> &'static KindDesc {
    match kind {
        FileKind::Secret => kind_of::<Secret>(),
        FileKind::Config => kind_of::<Config>(),
    }
}

/// `values`, or why this server cannot answer for secrets and configs.
pub(crate) fn kept(values: &Option<std::sync::Arc<Values>>) -> Result<&Values, Status> {
    values
        .as_deref()
        .ok_or_else(|| Status::unimplemented("this server keeps no secrets or configs"))
}

pub struct Values {
    objects: ObjectStore,
    /// The cluster key, which the keyring is sealed under.
    key: SealKey,
}

impl Values {
    /// The cluster's value keyring, made now if this is its first server. Fails if the
    /// ring does not open with `key` (another cluster's key file).
    pub async fn bootstrap(objects: ObjectStore, key: SealKey) -> Result<Values, ValueError> {
        loop {
            if let Some((sealed, _)) = objects.record(KEYRING_RECORD).await? {
                Keyring::open(&key, &sealed)?;
                return Ok(Values { objects, key });
            }
            let ring = Keyring::generate()?.seal(&key)?;
            if objects.create_keyring(ring).await? {
                tracing::info!("value keyring created");
            }
        }
    }

    fn ring(&self, sealed: &[u8]) -> Result<Keyring, ValueError> {
        Ok(Keyring::open(&self.key, sealed)?)
    }

    /// Makes `kind/name` holding `data`.
    pub async fn create(&self, req: pb::CreateValueRequest) -> Result<DynamicObject, Status> {
        let kind = shoal_api::kind_by_name(&req.kind)
            .and_then(file_kind)
            .ok_or_else(|| {
                Status::invalid_argument(format!("{:?}: values are Secret or Config", req.kind))
            })?;
        let reference = kind.reference(&req.name);
        if req.data.is_empty() || req.data.len() > MAX_VALUE_BYTES {
            return Err(Status::invalid_argument(format!(
                "{reference}: {} bytes; a value is 1 byte to 500 KiB ({MAX_VALUE_BYTES} bytes)",
                req.data.len()
            )));
        }
        let status = ValueStatus {
            digest: self.key.keyed_digest(&req.data),
            size: req.data.len() as u64,
        };
        let obj = match kind {
            FileKind::Secret => {
                let mut secret = Secret::new(&req.name, ValueSpec {});
                secret.status = Some(status);
                checked(&req, secret)
            }
            FileKind::Config => {
                let mut config = Config::new(&req.name, ValueSpec {});
                config.status = Some(status);
                checked(&req, config)
            }
        }?;
        let created = self
            .objects
            .create_sealed(obj, |ring| {
                Ok::<_, ValueError>(self.ring(ring)?.seal_value(&reference, &req.data)?)
            })
            .await
            .map_err(|e| match e {
                ValueError::Object(ObjectError::AlreadyExists { .. }) => Status::already_exists(format!(
                    "{reference} exists, and a value never changes: create the new one under another name and point the service at it (a rolling update)"
                )),
                other => other.into(),
            })?;
        tracing::info!(value = %reference, size = req.data.len(), "value created");
        Ok(created)
    }

    /// The value of `kind/name`, opened with `ring`.
    async fn open(
        &self,
        ring: &Keyring,
        kind: FileKind,
        name: &str,
    ) -> Result<Option<Vec<u8>>, ValueError> {
        let Some(sealed) = self.objects.sealed(desc(kind), name).await? else {
            return Ok(None);
        };
        Ok(Some(ring.open_value(&kind.reference(name), &sealed)?))
    }

    /// The values a node's task names, if the task is the node's and meant to run.
    #[tracing::instrument(skip(self))]
    pub async fn task_files(
        &self,
        node: &str,
        task: &str,
    ) -> Result<pb::TaskFilesResponse, Status> {
        let denied = || {
            Status::permission_denied(format!(
                "task/{task} is not a task of node/{node} meant to run: its secrets and configs go only to the node running it"
            ))
        };
        let task: Task = self
            .objects
            .get_typed(task)
            .await
            .map_err(status_of)?
            .ok_or_else(denied)?;
        let live = task.spec.node.as_deref() == Some(node)
            && task.spec.desired_state == DesiredState::Running
            && !task.status.as_ref().is_some_and(|s| s.state.is_terminal());
        if !live {
            return Err(denied());
        }
        // The keyring once for all of the task's values.
        let ring = self.ring(&self.objects.keyring().await.map_err(status_of)?)?;
        let mut files = Vec::new();
        let mut seen = BTreeSet::new();
        for (kind, r) in task.spec.container.files() {
            if !seen.insert((kind, r.name.as_str())) {
                continue;
            }
            let data = self.open(&ring, kind, &r.name).await?.ok_or_else(|| {
                Status::not_found(format!("{} not found", kind.reference(&r.name)))
            })?;
            files.push(pb::TaskFile {
                kind: kind.kind().into(),
                name: r.name.clone(),
                data,
            });
        }
        Ok(pb::TaskFilesResponse { files })
    }

    /// What still uses `kind/name`: services, and tasks of no service meant to run.
    async fn users(&self, kind: FileKind, name: &str) -> Result<Vec<String>, ObjectError> {
        let names = |spec: &shoal_api::ContainerSpec| {
            spec.files().any(|(k, r)| k == kind && r.name == name)
        };
        let (services, _) = self.objects.list_typed::<Service>().await?;
        let (tasks, _) = self.objects.list_typed::<Task>().await?;
        let mut users: Vec<String> = services
            .into_iter()
            .filter_map(Result::ok)
            .filter(|s| names(&s.spec.container))
            .map(|s| format!("service/{}", s.metadata.name))
            .collect();
        users.extend(
            tasks
                .into_iter()
                .filter_map(Result::ok)
                .filter(|t| {
                    !t.metadata.labels.contains_key(shoal_api::labels::SERVICE)
                        && t.spec.desired_state == DesiredState::Running
                        && names(&t.spec.container)
                })
                .map(|t| format!("task/{}", t.metadata.name)),
        );
        Ok(users)
    }

    /// Removes `kind/name` and its value, unless something uses it.
    pub async fn delete(&self, kind: FileKind, name: &str) -> Result<DynamicObject, Status> {
        let users = self.users(kind, name).await.map_err(status_of)?;
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{} is in use by {}; remove it from them first",
                kind.reference(name),
                users.join(", ")
            )));
        }
        let gone = self
            .objects
            .delete_sealed(desc(kind), name)
            .await
            .map_err(status_of)?;
        gone.ok_or_else(|| Status::not_found(format!("{} not found", kind.reference(name))))
    }

    /// A new value key for new seals; every data key sealed again under it; the keys
    /// nothing is sealed under any more dropped.
    #[tracing::instrument(skip(self))]
    pub async fn rotate(&self) -> Result<pb::RotateValueKeyResponse, Status> {
        let key = self
            .objects
            .modify_keyring(|sealed| {
                let ring = self.ring(sealed)?.rotated()?;
                Ok::<_, ValueError>((Some(ring.seal(&self.key)?), ring.current()))
            })
            .await?;
        tracing::info!(key, "value key rotated; resealing data keys");
        let resealed = self
            .objects
            .reseal_all(|sealed_ring, value| {
                let ring = self.ring(sealed_ring)?;
                let label = label_of_path(&value.path).ok_or_else(|| {
                    ObjectError::Invalid(format!("{}: not a value's place", value.path))
                })?;
                Ok::<_, ValueError>(ring.rewrap(&label, &value.bytes)?)
            })
            .await?;
        let mut dropped = Vec::new();
        self.objects
            .prune_keyring(|sealed_ring, values| {
                let mut ring = self.ring(sealed_ring)?;
                let in_use = values
                    .iter()
                    .map(|v| sealed_under(&v.bytes))
                    .collect::<Result<BTreeSet<u32>, _>>()?;
                let before = ring.ids();
                if !ring.retain(&in_use) {
                    return Ok::<_, ValueError>(None);
                }
                let after = ring.ids();
                dropped = before
                    .into_iter()
                    .filter(|id| !after.contains(id))
                    .collect();
                Ok(Some(ring.seal(&self.key)?))
            })
            .await?;
        tracing::info!(key, resealed, ?dropped, "value key rotation done");
        Ok(pb::RotateValueKeyResponse {
            key,
            resealed: u32::try_from(resealed).unwrap_or(u32::MAX),
            dropped,
        })
    }
}

/// The object of a new value, with the request's labels, checked as any object is.
fn checked<R: Resource>(req: &pb::CreateValueRequest, mut obj: R) -> Result<DynamicObject, Status> {
    obj.metadata_mut().labels = req.labels.clone().into_iter().collect();
    let mut problems = shoal_api::validate::Problems::default();
    shoal_api::validate::Validate::validate(&obj, &mut problems);
    if !problems.is_empty() {
        let lines: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
        return Err(Status::invalid_argument(lines.join("\n")));
    }
    DynamicObject::from_typed(&obj).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_paths_name_their_values() {
        assert_eq!(
            label_of_path("secrets/db-pass").as_deref(),
            Some("secret/db-pass")
        );
        assert_eq!(
            label_of_path("configs/a.conf").as_deref(),
            Some("config/a.conf")
        );
        assert_eq!(label_of_path("tasks/x"), None);
        assert_eq!(label_of_path("nonsense"), None);
    }
}
