//! The GitSync controller: keeps the cluster equal to the manifests under a path of a
//! git branch, tag or commit, the way Flux's kustomize-controller and Argo CD do.
//!
//! Each pass over a GitSync that is due (its interval passed, its spec changed, or a
//! sync was asked for with `shoal.dev/sync-requested`) fetches into the mirror, reads the
//! manifests at the fetched commit, checks all of them, applies them and prunes what
//! left git (`sync`), then writes the status and records the events.
//!
//! Guarantees: one GitSync is never synced twice at once (the controller's keyed
//! queue); a revision that cannot be applied as a whole leaves the last good one in
//! force. Assumptions: the mirror folder is this server's own (one leader at a time
//! runs controllers; a new leader starts from an empty mirror and fetches in full).

pub mod mirror;
pub mod sync;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shoal_api::meta::set_condition;
use shoal_api::{
    ConditionStatus, EventType, GitSync, GitSyncStatus, ObjectReference, Resource, SyncRecord,
    SYNC_REQUEST_ANNOTATION,
};
use shoal_reconcile::{
    Action, CancellationToken, Change, Controller, ControllerConfig, EventRecorder, Informers,
};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;

use crate::sync::{Applied, SyncError};

/// A fetch that takes longer is abandoned (and retried at the next interval).
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Sync attempts kept in `status.history`.
const HISTORY: usize = 5;
/// Objects named in one event message before "and N more".
const NAMED_IN_EVENT: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum GitSyncError {
    #[error(transparent)]
    Store(#[from] ObjectError),
}

pub struct Context {
    objects: ObjectStore,
    events: EventRecorder,
    /// Where the mirrors live: `<data-dir>/gitsync`.
    mirrors: PathBuf,
}

/// Runs the GitSync controller until `shutdown`, keeping mirrors under `mirrors`.
pub async fn run(informers: Informers, mirrors: PathBuf, shutdown: CancellationToken) {
    let objects = informers.objects().clone();
    let controller = Controller::<GitSync>::new(&informers, ControllerConfig::named("gitsync"));
    // A deleted GitSync's mirror goes with it (what it applied stays, as with Argo CD's
    // default: deleting the sync is not deleting the application).
    let root = mirrors.clone();
    informers.get::<GitSync>().on_change(move |change| {
        if let Change::Deleted(gs) = change {
            let (root, name) = (root.clone(), gs.name().to_string());
            tokio::task::spawn_blocking(move || mirror::remove_stale(&root, &name, None));
        }
    });
    let ctx = Arc::new(Context {
        events: EventRecorder::new(objects.clone(), "gitsync-controller"),
        objects,
        mirrors,
    });
    controller
        .run(reconcile, |_, _, _| Action::Backoff, ctx, shutdown)
        .await
}

/// Why a pass failed, for the Ready condition's reason.
enum Failure {
    Fetch(String),
    Invalid(String),
    NotOurs(String),
    Apply(String),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Fetch(_) => "FetchFailed",
            Failure::Invalid(_) => "ValidationFailed",
            Failure::NotOurs(_) => "OwnershipConflict",
            Failure::Apply(_) => "ApplyFailed",
        }
    }
    fn message(&self) -> &str {
        match self {
            Failure::Fetch(m) | Failure::Invalid(m) | Failure::NotOurs(m) | Failure::Apply(m) => m,
        }
    }
    /// Whether only a new commit (or a change in the cluster) can help: retrying the
    /// same revision gives the same answer.
    fn stalled(&self) -> bool {
        matches!(self, Failure::Invalid(_) | Failure::NotOurs(_))
    }
}

#[tracing::instrument(skip_all, fields(gitsync = %gs.name()))]
async fn reconcile(gs: Arc<GitSync>, ctx: Arc<Context>) -> Result<Action, GitSyncError> {
    let mut status = gs.status.clone().unwrap_or_default();
    let now = Utc::now();
    if gs.spec.suspend {
        let changed = set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::False,
            "Suspended",
            "suspended: nothing is synced until `shoal gitsync resume`",
            now,
        );
        if changed {
            write_status(&ctx, &gs, &status).await?;
            ctx.events
                .normal(gs.as_ref(), "Suspended", "syncs stopped")
                .await;
        }
        return Ok(Action::AwaitChange);
    }
    let interval = gs.spec.interval.0;
    let requested = gs
        .metadata
        .annotations
        .get(SYNC_REQUEST_ANNOTATION)
        .cloned();
    let asked = requested.is_some() && requested != status.last_handled_sync_request;
    let spec_changed = status.observed_generation != gs.metadata.generation;
    let resumed = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.reason == "Suspended");
    if !asked && !spec_changed && !resumed {
        if let Some(last) = status.last_sync_time {
            let since = (now - last).to_std().unwrap_or_default();
            if since < interval {
                return Ok(Action::Requeue(interval - since));
            }
        }
    }

    if resumed {
        ctx.events
            .normal(gs.as_ref(), "Resumed", "syncing again")
            .await;
    }
    let result = sync_once(&gs, &ctx, &status).await;
    status.observed_generation = gs.metadata.generation;
    status.last_handled_sync_request = requested;
    status.last_sync_time = Some(Utc::now());
    match result {
        Ok((revision, applied)) => {
            report_applied(&ctx, &gs, &status, &revision, &applied).await;
            status.last_fetched_revision = Some(revision.clone());
            status.last_attempted_revision = Some(revision.clone());
            status.inventory = applied.inventory.clone();
            if applied.failed.is_empty() {
                status.last_applied_revision = Some(revision.clone());
                let mut message = format!(
                    "applied {}: {} objects",
                    short(&revision),
                    status.inventory.len()
                );
                if !applied.skipped.is_empty() {
                    message.push_str(&format!(
                        " ({} left alone: reconcile disabled)",
                        applied.skipped.len()
                    ));
                }
                mark(&mut status, None, &message);
                remember(&mut status, &revision, "Applied", &message);
            } else {
                let failure = Failure::Apply(applied.failed.join("\n"));
                fail(&ctx, &gs, &mut status, &revision, failure).await;
            }
        }
        Err((revision, failure)) => {
            if let Some(rev) = &revision {
                status.last_fetched_revision = Some(rev.clone());
                status.last_attempted_revision = Some(rev.clone());
            }
            fail(
                &ctx,
                &gs,
                &mut status,
                revision.as_deref().unwrap_or(""),
                failure,
            )
            .await;
        }
    }
    write_status(&ctx, &gs, &status).await?;
    Ok(Action::Requeue(interval))
}

/// Fetches, reads, checks and applies. On failure, says which revision it got to.
async fn sync_once(
    gs: &GitSync,
    ctx: &Context,
    status: &GitSyncStatus,
) -> Result<(String, Applied), (Option<String>, Failure)> {
    let folder = mirror::folder_name(gs.name(), &gs.spec.url);
    let dir = ctx.mirrors.join(&folder);
    let (url, git_ref, path) = (
        gs.spec.url.clone(),
        gs.spec.ref_.clone(),
        gs.spec.path.clone(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let fetching = {
        let stop = stop.clone();
        let (root, name) = (ctx.mirrors.clone(), gs.name().to_string());
        tokio::task::spawn_blocking(move || {
            // A new folder means a new url (or a first sync): the old url's mirror goes.
            if !dir.exists() {
                mirror::remove_stale(&root, &name, Some(&folder));
            }
            let revision = mirror::fetch(&dir, &url, &git_ref, &stop)?;
            let files = mirror::read_manifests(&dir, &revision, &path);
            Ok::<_, mirror::MirrorError>((revision, files))
        })
    };
    let (revision, files) = match tokio::time::timeout(FETCH_TIMEOUT, fetching).await {
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            let m = format!("fetch timed out after {}s", FETCH_TIMEOUT.as_secs());
            return Err((None, Failure::Fetch(m)));
        }
        Ok(Err(join)) => return Err((None, Failure::Fetch(join.to_string()))),
        Ok(Ok(Err(e))) => return Err((None, Failure::Fetch(e.to_string()))),
        Ok(Ok(Ok(fetched))) => fetched,
    };
    if status.last_fetched_revision.as_deref() != Some(revision.as_str()) {
        let message = format!(
            "fetched {} at {} from {}",
            gs.spec.ref_,
            short(&revision),
            gs.spec.url
        );
        ctx.events.normal(gs, "Fetched", &message).await;
    }
    let fail = |f: Failure| Err((Some(revision.clone()), f));
    let files = match files {
        Ok(files) => files,
        Err(e) => return fail(Failure::Invalid(e.to_string())),
    };
    let desired = match sync::decode(gs.name(), &files) {
        Ok(d) => d,
        Err(e) => return fail(Failure::Invalid(e.to_string())),
    };
    tracing::info!(revision = %revision, objects = desired.len(), "applying");
    match sync::apply(
        &ctx.objects,
        gs.name(),
        desired,
        &status.inventory,
        gs.spec.prune,
    )
    .await
    {
        Ok(applied) => Ok((revision, applied)),
        Err(SyncError::NotOurs(list)) => fail(Failure::NotOurs(list.join("\n"))),
        Err(e) => fail(Failure::Apply(e.to_string())),
    }
}

fn mark(status: &mut GitSyncStatus, failure: Option<&Failure>, message: &str) {
    let now = Utc::now();
    let (ready, reason) = match failure {
        None => (ConditionStatus::True, "Synced"),
        Some(f) => (ConditionStatus::False, f.reason()),
    };
    set_condition(&mut status.conditions, "Ready", ready, reason, message, now);
    let stalled = failure.is_some_and(|f| f.stalled());
    // Not stalled: either in sync, or failing in a way the next attempt may get past.
    let (s, message) = if stalled {
        (ConditionStatus::True, message)
    } else {
        (ConditionStatus::False, "")
    };
    set_condition(&mut status.conditions, "Stalled", s, reason, message, now);
}

/// Adds a sync to the history, or refreshes the newest entry when nothing differs.
fn remember(status: &mut GitSyncStatus, revision: &str, result: &str, message: &str) {
    let record = SyncRecord {
        time: Utc::now(),
        revision: revision.to_string(),
        result: result.to_string(),
        message: message.to_string(),
    };
    match status.history.first_mut() {
        Some(newest)
            if newest.revision == record.revision
                && newest.result == record.result
                && newest.message == record.message =>
        {
            newest.time = record.time
        }
        _ => {
            status.history.insert(0, record);
            status.history.truncate(HISTORY);
        }
    }
}

async fn fail(
    ctx: &Context,
    gs: &GitSync,
    status: &mut GitSyncStatus,
    revision: &str,
    failure: Failure,
) {
    let at = if revision.is_empty() {
        String::new()
    } else {
        format!(" at {}", short(revision))
    };
    let message = format!("{}{at}: {}", failure.reason(), failure.message());
    tracing::warn!(%message, "sync failed");
    ctx.events.warning(gs, "SyncFailed", &message).await;
    mark(status, Some(&failure), failure.message());
    remember(status, revision, "Failed", &message);
}

/// A commit id as people read it: its first 12 digits.
fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// `a, b, c and 4 more`.
fn names(list: &[String]) -> String {
    let shown = list
        .iter()
        .take(NAMED_IN_EVENT)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match list.len().saturating_sub(NAMED_IN_EVENT) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

async fn report_applied(
    ctx: &Context,
    gs: &GitSync,
    status: &GitSyncStatus,
    revision: &str,
    applied: &Applied,
) {
    let short = short(revision);
    for reference in &applied.drift_corrected {
        let message = format!("{reference} was changed by hand; put back as at {short}");
        ctx.events.normal(gs, "DriftCorrected", &message).await;
        if let Some((kind, name)) = reference.split_once('/') {
            let involved = ObjectReference {
                kind: kind.to_string(),
                name: name.to_string(),
                uid: None,
            };
            let message = format!(
                "changed by hand; put back by gitsync/{} as at {short}",
                gs.name()
            );
            ctx.events
                .record(involved, EventType::Normal, "DriftCorrected", &message)
                .await;
        }
    }
    let changed = applied.created.len() + applied.configured.len() + applied.pruned.len();
    let new_revision = status.last_applied_revision.as_deref() != Some(revision);
    if changed == 0 && !new_revision {
        return;
    }
    let mut message = format!(
        "applied {short}: {} created, {} configured, {} pruned, {} unchanged",
        applied.created.len(),
        applied.configured.len() + applied.drift_corrected.len(),
        applied.pruned.len(),
        applied.unchanged
    );
    for (verb, list) in [
        ("created", &applied.created),
        ("configured", &applied.configured),
        ("pruned", &applied.pruned),
    ] {
        if !list.is_empty() {
            message.push_str(&format!("; {verb} {}", names(list)));
        }
    }
    ctx.events.normal(gs, "Applied", &message).await;
}

/// Writes the status over whatever is current: only this controller writes it, and the
/// object may have changed during a long sync (a sync request, for one).
async fn write_status(
    ctx: &Context,
    gs: &GitSync,
    status: &GitSyncStatus,
) -> Result<(), GitSyncError> {
    let kind = shoal_api::kind_of::<GitSync>();
    let value = serde_json::to_value(status).map_err(|e| ObjectError::Invalid(e.to_string()))?;
    match ctx
        .objects
        .update_status(kind, gs.name(), value, None)
        .await
    {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_what_differs_newest_first() {
        let mut status = GitSyncStatus::default();
        remember(&mut status, "a", "Applied", "ok");
        remember(&mut status, "a", "Applied", "ok");
        assert_eq!(status.history.len(), 1);
        remember(&mut status, "b", "Failed", "broken");
        for i in 0..10 {
            remember(&mut status, &format!("c{i}"), "Applied", "ok");
        }
        assert_eq!(status.history.len(), HISTORY);
        assert_eq!(status.history[0].revision, "c9");
    }

    #[test]
    fn event_messages_name_a_few_and_count_the_rest() {
        let list: Vec<String> = (0..7).map(|i| format!("Service/s{i}")).collect();
        assert_eq!(names(&list[..2]), "Service/s0, Service/s1");
        assert!(names(&list).ends_with("Service/s4 and 2 more"));
    }
}
