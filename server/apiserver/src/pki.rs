//! The cluster's PKI on the server: the CA, made by the first server to start and kept
//! in the store with its key sealed under the cluster key (which stays outside the
//! store, in each server's data directory), so every server of a cluster signs with
//! the same CA and a copy of the store alone gives nobody the key; the join tokens,
//! sealed the same way; and joining: a node with a valid token gets its CSR signed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_pki::{Ca, Identity, Issued, JoinToken, Role, SealKey};
use shoal_store::objects::{ObjectError, RecordChange};
use shoal_store::ObjectStore;

use crate::node_certs::{NodeCerts, Replacing};

const CA_RECORD: &str = "ca";
const TOKENS_RECORD: &str = "join-tokens";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Pki(#[from] shoal_pki::PkiError),
    #[error(transparent)]
    Store(#[from] ObjectError),
    #[error("the stored {0} is unreadable: {1}")]
    Corrupt(&'static str, String),
    #[error("the cluster CA in the store is sealed with another cluster key: give this server the cluster's key (--cluster-key-file; the first server's is <data-dir>/cluster.key)")]
    OtherKey,
}

#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    /// The CA key's PEM, sealed.
    sealed_key: Vec<u8>,
}

/// Each role's current secret.
#[derive(Serialize, Deserialize, Default, Clone)]
struct Secrets {
    worker: Option<String>,
    manager: Option<String>,
}

/// Which role a token joins as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRole {
    Worker,
    Manager,
}

impl JoinRole {
    pub fn parse(s: &str) -> Option<JoinRole> {
        match s {
            "worker" => Some(JoinRole::Worker),
            "manager" => Some(JoinRole::Manager),
            _ => None,
        }
    }

    fn secret(self, s: &Secrets) -> Option<&String> {
        match self {
            JoinRole::Worker => s.worker.as_ref(),
            JoinRole::Manager => s.manager.as_ref(),
        }
    }

    fn set(self, s: &mut Secrets, secret: String) {
        match self {
            JoinRole::Worker => s.worker = Some(secret),
            JoinRole::Manager => s.manager = Some(secret),
        }
    }
}

/// Why a join was refused: said to the joining node as it is.
#[derive(Debug, thiserror::Error)]
pub enum JoinRefused {
    #[error("{0}")]
    BadToken(String),
    #[error("the token names another cluster's CA (digest {0}); get a token from this cluster's `shoal token create`")]
    OtherCa(String),
    #[error("the token is not valid (rotated, or never made here)")]
    Unknown,
    #[error("{0}")]
    BadRequest(String),
    #[error("node {0:?} is up in the cluster; a token joins a new node, or one that is down")]
    Taken(String),
}

pub struct ClusterPki {
    ca: Ca,
    key: SealKey,
    objects: ObjectStore,
    /// How long the certificates the CA signs for nodes are valid.
    pub node_cert_lifetime: Duration,
}

impl ClusterPki {
    /// The cluster's CA, made now if this is the cluster's first server.
    pub async fn bootstrap(
        objects: ObjectStore,
        key: SealKey,
        node_cert_lifetime: Duration,
    ) -> Result<ClusterPki, PkiError> {
        loop {
            if let Some((bytes, _)) = objects.record(CA_RECORD).await? {
                let stored: StoredCa = serde_json::from_slice(&bytes)
                    .map_err(|e| PkiError::Corrupt("cluster CA", e.to_string()))?;
                let key_pem = key
                    .open(CA_RECORD, &stored.sealed_key)
                    .map_err(|_| PkiError::OtherKey)?;
                let key_pem = String::from_utf8(key_pem)
                    .map_err(|e| PkiError::Corrupt("cluster CA key", e.to_string()))?;
                let ca = Ca::from_pem(&stored.cert_pem, &key_pem)?;
                return Ok(ClusterPki {
                    ca,
                    key,
                    objects,
                    node_cert_lifetime,
                });
            }
            // A random name, so two clusters' CAs never look alike.
            let ca = Ca::create(&JoinToken::new_secret()?[..16])?;
            let stored = StoredCa {
                cert_pem: ca.cert_pem().to_string(),
                sealed_key: key.seal(CA_RECORD, ca.key_pem().as_bytes())?,
            };
            let bytes = serde_json::to_vec(&stored)
                .map_err(|e| PkiError::Corrupt("cluster CA", e.to_string()))?;
            if objects.create_record(CA_RECORD, bytes).await? {
                tracing::info!(digest = %ca.digest(), "cluster CA created");
            }
            // Made here or by another server first: read back what the cluster has.
        }
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    fn open_secrets(&self, sealed: &[u8]) -> Result<Secrets, PkiError> {
        let plain = self.key.open(TOKENS_RECORD, sealed)?;
        serde_json::from_slice(&plain).map_err(|e| PkiError::Corrupt("join tokens", e.to_string()))
    }

    async fn secrets(&self) -> Result<Option<Secrets>, PkiError> {
        match self.objects.record(TOKENS_RECORD).await? {
            Some((sealed, _)) => self.open_secrets(&sealed).map(Some),
            None => Ok(None),
        }
    }

    /// The role's token; made if there is none, or made anew with `rotate`.
    pub async fn token(&self, role: JoinRole, rotate: bool) -> Result<JoinToken, PkiError> {
        let secret = self
            .objects
            .modify_record(TOKENS_RECORD, |sealed| -> Result<_, PkiError> {
                let mut secrets = match sealed {
                    Some(sealed) => self.open_secrets(sealed)?,
                    None => Secrets::default(),
                };
                if let Some(secret) = role.secret(&secrets).filter(|_| !rotate) {
                    return Ok(RecordChange::Keep(secret.clone()));
                }
                let secret = JoinToken::new_secret()?;
                role.set(&mut secrets, secret.clone());
                let plain = serde_json::to_vec(&secrets)
                    .map_err(|e| PkiError::Corrupt("join tokens", e.to_string()))?;
                Ok(RecordChange::Write(
                    self.key.seal(TOKENS_RECORD, &plain)?,
                    secret,
                ))
            })
            .await?;
        Ok(self.token_of(&secret))
    }

    fn token_of(&self, secret: &str) -> JoinToken {
        JoinToken {
            ca_digest: self.ca.digest(),
            secret: secret.to_string(),
        }
    }

    /// Signs a joining node's CSR if its token is this cluster's: a worker token gives
    /// a node certificate, a manager token a server's.
    /// `taken` says whether a node of that name is in the cluster already; it is asked
    /// only once the token is good (an unknown caller learns nothing of the names).
    pub async fn join(
        &self,
        token: &str,
        name: &str,
        csr_pem: &str,
        sans: &[String],
        taken: impl std::future::Future<Output = Result<bool, ObjectError>>,
    ) -> Result<Issued, JoinError> {
        let token = JoinToken::parse(token).map_err(|e| JoinRefused::BadToken(e.to_string()))?;
        if token.ca_digest != self.ca.digest() {
            return Err(JoinRefused::OtherCa(token.ca_digest).into());
        }
        let secrets = self.secrets().await?.unwrap_or_default();
        let role = [JoinRole::Worker, JoinRole::Manager]
            .into_iter()
            .find(|r| r.secret(&secrets).is_some_and(|s| token.secret_is(s)))
            .ok_or(JoinRefused::Unknown)?;
        shoal_api::meta::check_name(name, true)
            .map_err(|why| JoinRefused::BadRequest(format!("node name: {why}")))?;
        // A token joins a new node, never one that is there: it would be that node.
        if taken.await? {
            return Err(JoinRefused::Taken(name.to_string()).into());
        }
        let identity = Identity {
            role: match role {
                JoinRole::Worker => Role::Node,
                JoinRole::Manager => Role::Server,
            },
            name: name.to_string(),
        };
        self.sign(&identity, csr_pem, sans)
            .map_err(|e| JoinRefused::BadRequest(e.to_string()).into())
    }

    /// A node's certificate for the key of `csr_pem`: named by the node's name (the
    /// server reaches a node's API expecting it) and `sans`.
    pub fn sign(
        &self,
        identity: &Identity,
        csr_pem: &str,
        sans: &[String],
    ) -> Result<Issued, shoal_pki::PkiError> {
        let mut names = vec![identity.name.clone()];
        names.extend(sans.iter().cloned());
        self.ca
            .sign_csr(csr_pem, identity, &names, self.node_cert_lifetime)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Refused(#[from] JoinRefused),
    #[error(transparent)]
    Failed(#[from] PkiError),
}

impl From<ObjectError> for JoinError {
    fn from(e: ObjectError) -> Self {
        JoinError::Failed(e.into())
    }
}

pub(crate) fn no_pki() -> tonic::Status {
    tonic::Status::failed_precondition("this server runs without a cluster PKI")
}

/// `Agent.ClusterCa`: the CA, to anyone (it is public; a joining node checks it).
pub(crate) fn cluster_ca_rpc(
    pki: Option<&ClusterPki>,
) -> Result<shoal_wire::pb::ClusterCaResponse, tonic::Status> {
    let pki = pki.ok_or_else(no_pki)?;
    Ok(shoal_wire::pb::ClusterCaResponse {
        ca_pem: pki.ca().cert_pem().to_string(),
    })
}

/// Puts a certificate just signed for `node` in force and answers with it.
async fn issued(
    pki: &ClusterPki,
    certs: &NodeCerts,
    node: &str,
    issued: Issued,
    replacing: Replacing,
) -> Result<shoal_wire::pb::JoinResponse, tonic::Status> {
    let serial = shoal_pki::Certified::from_pem(&issued.cert_pem)
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .serial;
    certs
        .issued(node, &serial, replacing)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(shoal_wire::pb::JoinResponse {
        cert_pem: issued.cert_pem,
        ca_pem: pki.ca().cert_pem().to_string(),
    })
}

/// `Agent.Renew`: a node (already checked to be `identity`) gets a new certificate.
pub(crate) async fn renew_rpc(
    pki: Option<&ClusterPki>,
    certs: &NodeCerts,
    identity: Identity,
    req: shoal_wire::pb::RenewRequest,
) -> Result<shoal_wire::pb::JoinResponse, tonic::Status> {
    let pki = pki.ok_or_else(no_pki)?;
    let signed = pki
        .sign(&identity, &req.csr_pem, &req.sans)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    tracing::info!(node = %identity.name, "node certificate renewed");
    issued(pki, certs, &identity.name, signed, Replacing::AllButNewest).await
}

/// `Agent.Join`: a refusal says why, as the joining node needs to hear it.
pub(crate) async fn join_rpc(
    pki: Option<&ClusterPki>,
    certs: &NodeCerts,
    req: shoal_wire::pb::JoinRequest,
) -> Result<shoal_wire::pb::JoinResponse, tonic::Status> {
    let pki = pki.ok_or_else(no_pki)?;
    // A node that is up; one that is down may join again (a machine reinstalled),
    // and the certificates it had stop working.
    let taken = async {
        let node = pki.objects.get_typed::<shoal_api::Node>(&req.name).await?;
        let up = node
            .and_then(|n| n.status)
            .is_some_and(|s| s.state == shoal_api::NodeState::Ready);
        Ok(up)
    };
    match pki
        .join(&req.token, &req.name, &req.csr_pem, &req.sans, taken)
        .await
    {
        Ok(signed) => {
            tracing::info!(node = %req.name, "node joined: its certificate is signed");
            issued(pki, certs, &req.name, signed, Replacing::All).await
        }
        Err(JoinError::Refused(why)) => {
            tracing::warn!(node = %req.name, %why, "join refused");
            Err(match why {
                JoinRefused::BadRequest(_) | JoinRefused::BadToken(_) => {
                    tonic::Status::invalid_argument(why.to_string())
                }
                JoinRefused::OtherCa(_) | JoinRefused::Unknown => {
                    tonic::Status::permission_denied(why.to_string())
                }
                JoinRefused::Taken(_) => tonic::Status::already_exists(why.to_string()),
            })
        }
        Err(JoinError::Failed(e)) => Err(tonic::Status::internal(e.to_string())),
    }
}

/// `Api.JoinToken`.
pub(crate) async fn token_rpc(
    pki: Option<&ClusterPki>,
    req: shoal_wire::pb::JoinTokenRequest,
) -> Result<shoal_wire::pb::JoinTokenResponse, tonic::Status> {
    let pki = pki.ok_or_else(no_pki)?;
    let role = JoinRole::parse(&req.role).ok_or_else(|| {
        tonic::Status::invalid_argument(format!("role {:?}: expected worker or manager", req.role))
    })?;
    let token = pki
        .token(role, req.rotate)
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    if req.rotate {
        tracing::info!(role = %req.role, "join token rotated");
    }
    Ok(shoal_wire::pb::JoinTokenResponse {
        token: token.to_string(),
    })
}
