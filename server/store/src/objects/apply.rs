//! Declarative apply: create-or-update of many manifests as one transaction.
//!
//! Every manifest is planned against what is stored (create, update, unchanged), and all
//! the writes go to the store in one [`Store::transact`](crate::Store::transact), so a
//! crash or a lost race leaves all of an apply or none of it. A race lost on a manifest
//! without a pinned `resourceVersion` plans again from a fresh read, through [`Tries`].
//! The embedded store takes any apply in one transaction; etcd at most 100 writes and
//! about 1 MiB, so a larger apply is written in parts, in manifest order, each part
//! whole.

use futures::StreamExt;
use shoal_api::DynamicObject;

use super::codec::{desc_of, encode, parse_rv};
use super::keys::object_key;
use super::retry::Tries;
use super::rules::{is_released, merge_user_fields, stamp_new, user_fields_equal};
use super::{ObjectError, ObjectStore, Result};
use crate::{BatchOp, Revision, StoreError, TxnLimit};

/// How many stored objects an apply reads at once.
const READ_AHEAD: usize = 32;

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// Why an apply wrote nothing (of the part that held `index`): the manifest at
/// `index` of those given.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ApplyError {
    pub index: usize,
    pub error: ObjectError,
}

/// One manifest's step, as planned from what is stored.
struct Step {
    outcome: ApplyOutcome,
    /// The object as it will be stored (or is, when unchanged).
    object: DynamicObject,
    /// The store write; None when unchanged.
    op: Option<BatchOp>,
}

impl ObjectStore {
    /// Create-or-update of one manifest: [`apply_all`](Self::apply_all) of one.
    pub async fn apply(
        &self,
        obj: DynamicObject,
        dry_run: bool,
    ) -> Result<(ApplyOutcome, DynamicObject)> {
        let mut done = self
            .apply_all(vec![obj], dry_run)
            .await
            .map_err(|e| e.error)?;
        done.pop()
            .ok_or_else(|| ObjectError::Invalid("apply of one manifest gave no result".into()))
    }

    /// Creates or updates every manifest, all in one transaction where the store can
    /// hold it (see the module's note), and gives each one's outcome in order. A
    /// manifest with a `resourceVersion` is written only at that version (else
    /// `Conflict`, and nothing of its part is written); the others land at the latest
    /// version, planned again after a lost race. With `dry_run`, says what would happen
    /// and writes nothing.
    pub async fn apply_all(
        &self,
        objs: Vec<DynamicObject>,
        dry_run: bool,
    ) -> Result<Vec<(ApplyOutcome, DynamicObject)>, ApplyError> {
        let limit = self.store.txn_limit();
        let mut current = self.read_all(&objs, 0..objs.len()).await?;
        let mut done = Vec::with_capacity(objs.len());
        while done.len() < objs.len() {
            let part = self
                .apply_part(&objs, &mut current, done.len(), limit, dry_run)
                .await?;
            done.extend(part);
        }
        Ok(done)
    }

    /// Applies the longest run of manifests from `start` that one transaction holds
    /// (`current`: what was read for each), retrying lost races through [`Tries`].
    async fn apply_part(
        &self,
        objs: &[DynamicObject],
        current: &mut [Option<DynamicObject>],
        start: usize,
        limit: TxnLimit,
        dry_run: bool,
    ) -> Result<Vec<(ApplyOutcome, DynamicObject)>, ApplyError> {
        let mut tries = Tries::new(&objs[start].kind, objs[start].name());
        let mut loser = start;
        let mut stale: Option<std::ops::Range<usize>> = None;
        loop {
            tries.begin().await.map_err(|error| at(loser, error))?;
            // Read again after the pause, not before it: what was read before is what
            // lost the race.
            if let Some(range) = stale.take() {
                let fresh = self.read_all(objs, range.clone()).await?;
                for (slot, now) in current[range].iter_mut().zip(fresh) {
                    *slot = now;
                }
            }
            let steps = plan_part(&objs[start..], &current[start..], limit)
                .map_err(|(i, error)| at(start + i, error))?;
            let end = start + steps.len();
            if dry_run {
                // Nothing is created, so nothing gets a uid or timestamps.
                return Ok(steps
                    .into_iter()
                    .zip(&objs[start..])
                    .map(|(s, obj)| match s.outcome {
                        ApplyOutcome::Created => (s.outcome, obj.clone()),
                        _ => (s.outcome, s.object),
                    })
                    .collect());
            }
            let (i, e) = match self.write_part(steps).await {
                Ok(written) => return Ok(written),
                Err((i, e)) => (start + i, e),
            };
            let obj = &objs[i];
            match lost_race(&e) {
                // Someone else wrote first: plan again on what is there now.
                Some(now) if pinned(obj).is_none() => {
                    tries.lost_on(&obj.kind, obj.name(), now);
                    loser = i;
                    stale = Some(start..end);
                }
                _ => return Err(at(i, self.map_err(e, &obj.kind, obj.name()))),
            }
        }
    }

    /// What is stored for `objs[range]`, read a few at a time.
    async fn read_all(
        &self,
        objs: &[DynamicObject],
        range: std::ops::Range<usize>,
    ) -> Result<Vec<Option<DynamicObject>>, ApplyError> {
        futures::stream::iter(range)
            .map(|i| async move {
                let obj = &objs[i];
                let kind = desc_of(obj).map_err(|e| at(i, e))?;
                self.get(kind, obj.name()).await.map_err(|e| at(i, e))
            })
            .buffered(READ_AHEAD)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Writes one part's steps in one transaction; on failure, which step (by its
    /// place in the part) and why.
    async fn write_part(
        &self,
        steps: Vec<Step>,
    ) -> std::result::Result<Vec<(ApplyOutcome, DynamicObject)>, (usize, StoreError)> {
        let mut ops = Vec::new();
        let mut owners = Vec::new();
        let mut done = Vec::with_capacity(steps.len());
        for (i, step) in steps.into_iter().enumerate() {
            if let Some(op) = step.op {
                ops.push(op);
                owners.push(i);
            }
            done.push((step.outcome, step.object));
        }
        if ops.is_empty() {
            return Ok(done);
        }
        let keys: Vec<String> = ops.iter().map(|op| op.key().to_string()).collect();
        match self.store.transact(ops).await {
            Ok(revisions) => {
                for (&i, rev) in owners.iter().zip(revisions) {
                    done[i].1.metadata.resource_version = Some(rev.to_string());
                }
                Ok(done)
            }
            Err(e) => {
                let failed = failed_key(&e)
                    .and_then(|key| keys.iter().position(|k| k == key))
                    .map_or(0, |op| owners[op]);
                Err((failed, e))
            }
        }
    }
}

fn at(index: usize, error: ObjectError) -> ApplyError {
    ApplyError { index, error }
}

fn pinned(obj: &DynamicObject) -> Option<Revision> {
    parse_rv(obj).ok().flatten()
}

/// Whether `e` is a precondition lost to another writer (changed, created or deleted
/// meanwhile), and the key's revision when it says.
fn lost_race(e: &StoreError) -> Option<Revision> {
    match e {
        StoreError::Conflict { current, .. } => Some(*current),
        StoreError::AlreadyExists { .. } | StoreError::NotFound { .. } => Some(0),
        _ => None,
    }
}

/// The key a failed precondition names.
fn failed_key(e: &StoreError) -> Option<&str> {
    match e {
        StoreError::Conflict { key, .. }
        | StoreError::AlreadyExists { key }
        | StoreError::NotFound { key } => Some(key),
        _ => None,
    }
}

/// The steps of the longest run of `objs` (from the first) whose writes fit in one
/// transaction: at least one manifest, however large. On a manifest that cannot be
/// applied as it stands, its place in `objs` and why.
fn plan_part(
    objs: &[DynamicObject],
    current: &[Option<DynamicObject>],
    limit: TxnLimit,
) -> std::result::Result<Vec<Step>, (usize, ObjectError)> {
    let (mut steps, mut writes, mut bytes) = (Vec::new(), 0, 0);
    for (i, (obj, current)) in objs.iter().zip(current).enumerate() {
        let step = plan(obj, current.as_ref()).map_err(|e| (i, e))?;
        if let Some(op) = &step.op {
            if writes > 0 && (writes + 1 > limit.ops || bytes + op.size() > limit.bytes) {
                break;
            }
            writes += 1;
            bytes += op.size();
        }
        steps.push(step);
    }
    Ok(steps)
}

/// One manifest's step against what is stored for it.
fn plan(obj: &DynamicObject, current: Option<&DynamicObject>) -> Result<Step> {
    let kind = desc_of(obj)?;
    let key = object_key(kind, obj.name());
    let pinned = parse_rv(obj)?;
    let Some(current) = current else {
        if pinned.is_some() {
            return Err(ObjectError::NotFound {
                kind: obj.kind.clone(),
                name: obj.name().into(),
            });
        }
        let mut object = obj.clone();
        stamp_new(&mut object.metadata);
        let value = encode(&object)?;
        return Ok(Step {
            outcome: ApplyOutcome::Created,
            object,
            op: Some(BatchOp::Create {
                key,
                value,
                lease: None,
            }),
        });
    };
    let current_rv = parse_rv(current)?.unwrap_or(0);
    if let Some(pinned) = pinned {
        if pinned != current_rv {
            return Err(ObjectError::Conflict {
                kind: obj.kind.clone(),
                name: obj.name().into(),
                expected: pinned,
                current: current_rv,
            });
        }
    }
    let merged = merge_user_fields(current, obj.clone());
    if user_fields_equal(current, &merged) {
        return Ok(Step {
            outcome: ApplyOutcome::Unchanged,
            object: current.clone(),
            op: None,
        });
    }
    // Clearing the last finalizer of an object being deleted deletes it.
    let op = if is_released(&merged) {
        BatchOp::Delete {
            key,
            expected: current_rv,
        }
    } else {
        BatchOp::Update {
            key,
            value: encode(&merged)?,
            expected: current_rv,
            lease: None,
        }
    };
    Ok(Step {
        outcome: ApplyOutcome::Configured,
        object: merged,
        op: Some(op),
    })
}
