//! Claims: one key per thing handed out (an address on a network, a VXLAN id, a
//! subnet), created only where absent. Two allocators (a leader, and one that has not
//! yet noticed it lost its lease) can then never hand out the same thing twice, and an
//! allocation of many things lands in one transaction. Releasing deletes the key at the
//! revision it was read.

use super::keys::ROOT;
use super::{ObjectError, ObjectStore, Result};
use crate::{BatchOp, Revision, StoreError};
use serde::{Deserialize, Serialize};

/// Every claim lives under `/shoal/claims/`.
fn claim_key(path: &str) -> String {
    format!("{ROOT}claims/{path}")
}

/// Who holds a claim: an object, by kind, name and uid (a re-created object with the
/// same name is someone else).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClaimOwner {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A claim as stored: its path under `/shoal/claims/`, its holder and its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub path: String,
    pub owner: ClaimOwner,
    pub revision: Revision,
}

/// Claims to create and claims to release, in one transaction.
#[derive(Default, Debug)]
pub struct ClaimWrite {
    pub claim: Vec<(String, ClaimOwner)>,
    pub release: Vec<Claim>,
}

impl ClaimWrite {
    pub fn is_empty(&self) -> bool {
        self.claim.is_empty() && self.release.is_empty()
    }
}

impl ObjectStore {
    /// The claims under `prefix` (a path under `/shoal/claims/`).
    pub async fn claims(&self, prefix: &str) -> Result<Vec<Claim>> {
        let root = claim_key("");
        let listed = self.store.list(&claim_key(prefix)).await?;
        listed
            .items
            .into_iter()
            .map(|kv| {
                let owner =
                    serde_json::from_slice(&kv.value).map_err(|e| ObjectError::Corrupt {
                        key: kv.key.clone(),
                        why: e.to_string(),
                    })?;
                Ok(Claim {
                    path: kv.key.strip_prefix(&root).unwrap_or(&kv.key).to_string(),
                    owner,
                    revision: kv.mod_revision,
                })
            })
            .collect()
    }

    /// Creates and releases as `write` says, all or nothing. A claim someone else holds
    /// is `AlreadyExists` naming it; a released claim that changed meanwhile is
    /// `Conflict`. The object that records an allocation is written after it: the
    /// claim is the truth, and a crash in between leaves a claim its owner's next
    /// reconcile finds and records.
    pub async fn write_claims(&self, write: ClaimWrite) -> Result<()> {
        let mut ops = Vec::with_capacity(write.claim.len() + write.release.len());
        for (path, owner) in &write.claim {
            let value =
                serde_json::to_vec(owner).map_err(|e| ObjectError::Invalid(e.to_string()))?;
            ops.push(BatchOp::Create {
                key: claim_key(path),
                value,
                lease: None,
            });
        }
        for claim in &write.release {
            ops.push(BatchOp::Delete {
                key: claim_key(&claim.path),
                expected: claim.revision,
            });
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.store.transact(ops).await.map_err(|e| match e {
            StoreError::AlreadyExists { key } => ObjectError::AlreadyExists {
                kind: "claim".into(),
                name: key,
            },
            StoreError::Conflict {
                key,
                expected,
                current,
            } => ObjectError::Conflict {
                kind: "claim".into(),
                name: key,
                expected,
                current,
            },
            other => ObjectError::Store(other),
        })?;
        Ok(())
    }
}
