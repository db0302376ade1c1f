//! One sync of a revision's manifests into the cluster: decode and check everything
//! first, check ownership of everything, then apply in dependency order and prune.
//!
//! Guarantees:
//! - Nothing is written when any manifest is invalid, or when any object the revision
//!   names belongs to someone else (another GitSync, or a hand-made object).
//! - Only objects in this GitSync's inventory, still carrying its label (or no GitSync
//!   label at all), are ever pruned.
//! - A live object annotated `shoal.dev/reconcile: disabled` is neither changed nor
//!   pruned.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use shoal_api::yaml::{decode_manifests, Manifest};
use shoal_api::{kind_by_name, DynamicObject, InventoryEntry, GITSYNC_LABEL, RECONCILE_ANNOTATION};
use shoal_store::objects::{ApplyOutcome, ObjectError};
use shoal_store::ObjectStore;

use crate::mirror::SourceFile;

/// Writes in flight at once while applying one kind.
const CONCURRENCY: usize = 16;

/// Why a revision was not (fully) applied.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Some manifest is broken: nothing was applied.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// Some object belongs to someone else: nothing was applied.
    #[error("{}", .0.join("\n"))]
    NotOurs(Vec<String>),
    #[error(transparent)]
    Store(#[from] ObjectError),
}

/// A checked manifest, labelled as this GitSync's, with the digest of what git says.
#[derive(Debug, Clone)]
pub struct Desired {
    pub source: String,
    pub object: DynamicObject,
    pub digest: String,
}

/// What one sync did, object by object (`Kind/name`).
#[derive(Debug, Default)]
pub struct Applied {
    pub created: Vec<String>,
    pub configured: Vec<String>,
    /// Changed by hand since git last said the same thing: put back.
    pub drift_corrected: Vec<String>,
    pub pruned: Vec<String>,
    pub unchanged: usize,
    /// Annotated `shoal.dev/reconcile: disabled`.
    pub skipped: Vec<String>,
    /// Objects the store refused, with why.
    pub failed: Vec<String>,
    pub inventory: Vec<InventoryEntry>,
}

/// The order objects are applied in: what others refer to first. Pruning goes backwards.
fn rank(kind: &str) -> u8 {
    match kind {
        "Network" => 0,
        "LogPipeline" => 1,
        "GitSync" => 2,
        "Service" => 3,
        "Task" => 4,
        _ => 5,
    }
}

/// Decodes and checks every file. All or nothing: any problem anywhere is returned
/// with its file, line and field path, and no manifest is.
pub fn decode(owner: &str, files: &[SourceFile]) -> Result<Vec<Desired>, SyncError> {
    let mut problems = Vec::new();
    let mut desired = Vec::new();
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    for file in files {
        match decode_manifests(&file.path, &file.text) {
            Ok(manifests) => {
                for m in manifests {
                    check_one(owner, m, &mut seen, &mut problems, &mut desired);
                }
            }
            Err(diagnostics) => problems.extend(diagnostics.iter().map(|d| d.to_string())),
        }
    }
    if problems.is_empty() {
        Ok(desired)
    } else {
        Err(SyncError::Invalid(problems))
    }
}

fn check_one(
    owner: &str,
    m: Manifest,
    seen: &mut HashMap<(String, String), String>,
    problems: &mut Vec<String>,
    desired: &mut Vec<Desired>,
) {
    let source = format!("{}: doc {}, line {}", m.file, m.doc, m.line);
    let mut object = m.object;
    let writable = object.kind_desc().is_some_and(|d| d.user_writable);
    if !writable {
        problems.push(format!(
            "{source}: {} objects are written by shoal itself and cannot be applied",
            object.kind
        ));
        return;
    }
    let key = (object.kind.clone(), object.metadata.name.clone());
    if let Some(first) = seen.get(&key) {
        problems.push(format!(
            "{source}: {} is also defined at {first}",
            object.reference()
        ));
        return;
    }
    seen.insert(key, source.clone());
    object
        .metadata
        .labels
        .insert(GITSYNC_LABEL.to_string(), owner.to_string());
    let digest = digest(&object);
    desired.push(Desired {
        source,
        object,
        digest,
    });
}

/// What git says about an object, as a short hex digest.
fn digest(obj: &DynamicObject) -> String {
    let said = serde_json::json!([
        obj.kind,
        obj.metadata.name,
        obj.user_body(),
        obj.metadata.labels,
        obj.metadata.annotations
    ]);
    let hash = Sha256::digest(said.to_string().as_bytes());
    hex::encode(&hash[..8])
}

fn disabled(live: &DynamicObject) -> bool {
    live.metadata
        .annotations
        .get(RECONCILE_ANNOTATION)
        .is_some_and(|v| v == "disabled")
}

/// Above this many objects, listing each kind costs less than getting them one by one.
const LIST_ABOVE: usize = 64;

/// The live objects among `keys` (`(kind, name)`), by key. A small sync reads just its
/// objects (a cluster may hold thousands of the same kind); a large one lists the kinds.
async fn live_objects(
    objects: &ObjectStore,
    keys: HashSet<(String, String)>,
) -> Result<HashMap<(String, String), DynamicObject>, SyncError> {
    let mut live = HashMap::new();
    if keys.len() > LIST_ABOVE {
        let kinds: HashSet<&String> = keys.iter().map(|(kind, _)| kind).collect();
        for kind in kinds {
            let Some(desc) = kind_by_name(kind) else {
                continue;
            };
            for obj in objects.list(desc).await?.0 {
                let key = (kind.clone(), obj.metadata.name.clone());
                if keys.contains(&key) {
                    live.insert(key, obj);
                }
            }
        }
        return Ok(live);
    }
    let found = futures::stream::iter(keys)
        .map(|key| {
            let objects = objects.clone();
            async move {
                let obj = match kind_by_name(&key.0) {
                    Some(desc) => objects.get(desc, &key.1).await,
                    None => Ok(None),
                };
                (key, obj)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (key, obj) in found {
        if let Some(obj) = obj? {
            live.insert(key, obj);
        }
    }
    Ok(live)
}

/// Applies `desired` for the GitSync `owner`, whose last inventory was `previous`, and
/// prunes what left git when `prune` is on.
pub async fn apply(
    objects: &ObjectStore,
    owner: &str,
    desired: Vec<Desired>,
    previous: &[InventoryEntry],
    prune: bool,
) -> Result<Applied, SyncError> {
    let before: HashMap<(String, String), &InventoryEntry> = previous
        .iter()
        .map(|e| ((e.kind.clone(), e.name.clone()), e))
        .collect();
    let wanted: HashSet<(String, String)> = desired
        .iter()
        .map(|d| (d.object.kind.clone(), d.object.metadata.name.clone()))
        .collect();
    let keys = wanted
        .iter()
        .cloned()
        .chain(before.keys().cloned())
        .collect();
    let live = live_objects(objects, keys).await?;
    let ours = |key: &(String, String), obj: &DynamicObject| {
        match obj.metadata.labels.get(GITSYNC_LABEL) {
            Some(o) => o == owner,
            // A hand apply of one of ours drops the label; it is still ours.
            None => before.contains_key(key),
        }
    };

    let mut done = Applied::default();
    let mut not_ours = Vec::new();
    let mut by_rank: BTreeMap<u8, Vec<Desired>> = BTreeMap::new();
    for d in desired {
        let key = (d.object.kind.clone(), d.object.metadata.name.clone());
        match live.get(&key) {
            Some(obj) if !ours(&key, obj) => {
                let whose = match obj.metadata.labels.get(GITSYNC_LABEL) {
                    Some(other) => format!("it belongs to gitsync/{other}"),
                    None => "it exists and was not made by this GitSync (applied by hand?)".into(),
                };
                not_ours.push(format!(
                    "{}: {}: {whose}; it is left as it is",
                    d.source,
                    d.object.reference()
                ));
            }
            Some(obj) if disabled(obj) => {
                done.skipped.push(d.object.reference());
                if let Some(entry) = before.get(&key) {
                    done.inventory.push((*entry).clone());
                }
            }
            _ => by_rank.entry(rank(&d.object.kind)).or_default().push(d),
        }
    }
    if !not_ours.is_empty() {
        return Err(SyncError::NotOurs(not_ours));
    }

    for (_, group) in by_rank {
        let results = futures::stream::iter(group)
            .map(|d| {
                let objects = objects.clone();
                async move {
                    let result = objects.apply(d.object.clone(), false).await;
                    (d, result)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (d, result) in results {
            let key = (d.object.kind.clone(), d.object.metadata.name.clone());
            let reference = d.object.reference();
            match result {
                Ok((outcome, _)) => {
                    match outcome {
                        ApplyOutcome::Created => done.created.push(reference),
                        ApplyOutcome::Unchanged => done.unchanged += 1,
                        ApplyOutcome::Configured => {
                            let git_same = before.get(&key).is_some_and(|e| e.digest == d.digest);
                            if git_same {
                                done.drift_corrected.push(reference)
                            } else {
                                done.configured.push(reference)
                            }
                        }
                    }
                    done.inventory.push(InventoryEntry {
                        kind: key.0,
                        name: key.1,
                        digest: d.digest.clone(),
                    });
                }
                Err(e) => {
                    done.failed.push(format!("{}: {reference}: {e}", d.source));
                    // Keep tracking what was ours, so a later sync can still prune it.
                    if let Some(entry) = before.get(&key) {
                        done.inventory.push((*entry).clone());
                    }
                }
            }
        }
    }

    let mut gone: Vec<&InventoryEntry> = previous
        .iter()
        .filter(|e| !wanted.contains(&(e.kind.clone(), e.name.clone())))
        .collect();
    gone.sort_by_key(|e| std::cmp::Reverse(rank(&e.kind)));
    for entry in gone {
        let key = (entry.kind.clone(), entry.name.clone());
        // Without prune, what left git is simply no longer tracked.
        let Some(obj) = live.get(&key).filter(|_| prune) else {
            continue;
        };
        if !ours(&key, obj) || disabled(obj) {
            continue;
        }
        // After a failed apply, prune nothing: the revision is only partly in force.
        if !done.failed.is_empty() {
            done.inventory.push(entry.clone());
            continue;
        }
        let Some(desc) = kind_by_name(&entry.kind) else {
            continue;
        };
        match objects.delete(desc, &entry.name).await {
            Ok(_) | Err(ObjectError::NotFound { .. }) => {
                done.pruned.push(format!("{}/{}", entry.kind, entry.name))
            }
            Err(e) => {
                done.failed
                    .push(format!("pruning {}/{}: {e}", entry.kind, entry.name));
                done.inventory.push(entry.clone());
            }
        }
    }
    // Writes finish in any order; reports should not.
    for list in [
        &mut done.created,
        &mut done.configured,
        &mut done.drift_corrected,
    ] {
        list.sort();
    }
    done.inventory.sort();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    const WEB: &str = "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: busybox, replicas: 2}\n";

    #[test]
    fn every_problem_in_every_file_is_reported_with_where_it_is() {
        let files = [
            file("deploy/web.yaml", WEB),
            file(
                "deploy/bad.yaml",
                "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: api}\nspec:\n  image: busybox\n  replicas: lots\n",
            ),
            file("deploy/again.yaml", WEB),
        ];
        let Err(SyncError::Invalid(problems)) = decode("prod", &files) else {
            panic!("expected problems")
        };
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("deploy/bad.yaml: doc 1, line 6: spec.replicas"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains(
                "deploy/again.yaml: doc 1, line 1: Service/web is also defined at deploy/web.yaml"
            ),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn objects_are_labelled_and_the_digest_follows_what_git_says() {
        let a = decode("prod", &[file("web.yaml", WEB)]).unwrap();
        assert_eq!(a[0].object.metadata.labels[GITSYNC_LABEL], "prod");
        let b = decode("prod", &[file("other/place.yaml", WEB)]).unwrap();
        assert_eq!(
            a[0].digest, b[0].digest,
            "where a manifest lives is not what it says"
        );
        let twin = WEB.replace("name: web", "name: twin");
        let twin = decode("prod", &[file("web.yaml", &twin)]).unwrap();
        assert_ne!(a[0].digest, twin[0].digest, "each object has its own");
        let changed = WEB.replace("replicas: 2", "replicas: 3");
        let c = decode("prod", &[file("web.yaml", &changed)]).unwrap();
        assert_ne!(a[0].digest, c[0].digest);
    }

    #[test]
    fn kinds_others_refer_to_come_first() {
        let mut kinds = ["Task", "Service", "Network", "GitSync", "LogPipeline"];
        kinds.sort_by_key(|k| rank(k));
        assert_eq!(
            kinds,
            ["Network", "LogPipeline", "GitSync", "Service", "Task"]
        );
    }
}
