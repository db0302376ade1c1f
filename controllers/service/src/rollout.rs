//! Rolling updates: replace tasks of an older spec in batches of `parallelism`, waiting
//! `delay` between batches and `monitor` for each new task to prove itself; on failures
//! beyond `maxFailureRatio`, pause, continue or roll back.

use std::sync::Arc;
use std::time::Duration;

use shoal_api::{
    DesiredState, FailureAction, RevisionRecord, Task, TaskState, UpdateOrder, UpdateState,
    UpdateStatus,
};

use crate::plan::{healthy, next_task, state, Index, Plan, Slot, View};
use crate::template::{is_history, label, template_hash, SLOT, TEMPLATE};

/// Revisions kept in status.history.
const HISTORY_REVISIONS: usize = 10;

/// Records a new generation in the history and starts an update when tasks exist
/// from an older template.
pub fn observe_generation(view: &View, idx: &Index, plan: &mut Plan) {
    let svc = view.svc;
    let generation = svc.metadata.generation.unwrap_or(1);
    if plan.status.observed_generation == Some(generation) {
        return;
    }
    let current = template_hash(&svc.spec);
    let rollback = matches!(&plan.status.update, Some(u) if u.state == UpdateState::RollbackStarted && u.generation == generation);
    let previous_template = plan.status.history.last().map(|r| r.template.clone());
    // Revisions are task template changes; scaling is not a revision.
    if previous_template.as_deref() != Some(current.as_str()) {
        plan.status.history.push(RevisionRecord {
            generation,
            template: current.clone(),
            time: view.now,
            cause: if rollback {
                "rollback".into()
            } else {
                "apply".into()
            },
            spec: Box::new(svc.spec.clone()),
        });
    }
    let excess = plan.status.history.len().saturating_sub(HISTORY_REVISIONS);
    plan.status.history.drain(..excess);
    let outdated_exist = idx
        .live
        .values()
        .any(|t| !state(t).is_terminal() && label(t, TEMPLATE) != Some(current.as_str()));
    if previous_template.as_deref() != Some(current.as_str()) && outdated_exist && !rollback {
        plan.status.update = Some(UpdateStatus {
            state: UpdateState::Updating,
            message: format!("rolling out generation {generation}"),
            generation,
            started_at: Some(view.now),
            last_batch_at: None,
            completed_at: None,
        });
        plan.event(
            false,
            "UpdateStarted",
            format!(
                "rolling update to generation {generation} ({})",
                svc.spec.container.image
            ),
        );
    }
}

/// Plans the next step of a rolling update, if one is in progress.
pub fn plan_update(view: &View, idx: &Index, wanted: &[Slot], plan: &mut Plan) {
    let svc = view.svc;
    let cfg = &svc.spec.update;
    let current = template_hash(&svc.spec);
    let monitor = cfg.monitor.0;
    let is_current = |t: &Task| label(t, TEMPLATE) == Some(current.as_str());

    // start-first leftovers: old tasks kept running until their replacement is healthy.
    let mut in_flight = 0usize;
    for t in idx.by_slot.values().flatten().filter(|t| is_history(t)) {
        if t.spec.desired_state != DesiredState::Running || state(t).is_terminal() {
            continue;
        }
        let slot = label(t, SLOT).unwrap_or_default();
        let replacement = wanted
            .iter()
            .find(|s| s.key == slot)
            .and_then(|s| idx.live.get(s.name.as_str()));
        let done =
            replacement.is_none_or(|r| healthy(r, monitor, view.now) || state(r).is_terminal());
        if done {
            plan.shutdown(t);
        } else {
            in_flight += 1;
        }
    }

    let mut outdated: Vec<(&Slot, &Arc<Task>)> = Vec::new();
    for slot in wanted {
        let Some(t) = idx.live.get(slot.name.as_str()) else {
            in_flight += 1; // being created
            continue;
        };
        if state(t).is_terminal() {
            in_flight += 1; // being replaced
            continue;
        }
        if !is_current(t) {
            if t.spec.desired_state == DesiredState::Shutdown {
                in_flight += 1; // stop-first: waiting for it to stop
            } else if !plan.is_stopping(t) {
                outdated.push((slot, t));
            }
        } else if !healthy(t, monitor, view.now) {
            in_flight += 1;
            if state(t) == TaskState::Running {
                let started = t
                    .status
                    .as_ref()
                    .and_then(|s| s.started_at)
                    .unwrap_or(view.now);
                let ready_at = (started - view.now).to_std().unwrap_or_default() + monitor;
                plan.requeue_in(ready_at);
            }
        }
    }

    let Some(update) = plan.status.update.clone() else {
        return;
    };
    let active = matches!(
        update.state,
        UpdateState::Updating | UpdateState::RollbackStarted
    );
    if !active {
        return;
    }

    // Failures of tasks started by this update.
    let started_at = update.started_at.unwrap_or(view.now);
    let new_tasks: Vec<&Arc<Task>> = idx
        .by_slot
        .values()
        .flatten()
        .filter(|t| {
            is_current(t)
                && t.metadata
                    .creation_timestamp
                    .is_some_and(|c| c >= started_at)
        })
        .copied()
        .collect();
    let failed = new_tasks
        .iter()
        .filter(|t| matches!(state(t), TaskState::Failed | TaskState::Rejected))
        .count();
    if failed > 0 && failed as f64 / new_tasks.len().max(1) as f64 > cfg.max_failure_ratio {
        let rolling_back = update.state == UpdateState::RollbackStarted;
        match (cfg.failure_action, rolling_back) {
            (FailureAction::Continue, _) => {}
            (FailureAction::Rollback, false) => {
                let generation = svc.metadata.generation.unwrap_or(1);
                let previous = plan
                    .status
                    .history
                    .iter()
                    .rev()
                    .find(|r| r.generation < generation && r.template != current)
                    .map(|r| (*r.spec).clone());
                match previous {
                    Some(spec) => {
                        plan.rollback_to = Some(spec);
                        plan.status.update = Some(UpdateStatus {
                            state: UpdateState::RollbackStarted,
                            message: format!(
                                "{failed} of {} new tasks failed; rolling back",
                                new_tasks.len()
                            ),
                            generation: generation + 1,
                            started_at: Some(view.now),
                            last_batch_at: None,
                            completed_at: None,
                        });
                        plan.event(true, "RollbackStarted", format!(
                            "update to generation {generation} failed ({failed} of {} new tasks); rolling back",
                            new_tasks.len()
                        ));
                        return;
                    }
                    None => pause(
                        plan,
                        &update,
                        failed,
                        new_tasks.len(),
                        "no earlier revision to roll back to; ",
                    ),
                }
            }
            _ => pause(plan, &update, failed, new_tasks.len(), ""),
        }
        if plan.status.update.as_ref().is_some_and(|u| {
            !matches!(
                u.state,
                UpdateState::Updating | UpdateState::RollbackStarted
            )
        }) {
            return;
        }
    }

    if outdated.is_empty() {
        if in_flight == 0 {
            let (state_done, reason, msg) = if update.state == UpdateState::RollbackStarted {
                (
                    UpdateState::RollbackCompleted,
                    "RolledBack",
                    format!("rolled back to {}", svc.spec.container.image),
                )
            } else {
                (
                    UpdateState::Completed,
                    "UpdateCompleted",
                    format!("generation {} rolled out", update.generation),
                )
            };
            plan.status.update = Some(UpdateStatus {
                state: state_done,
                message: msg.clone(),
                completed_at: Some(view.now),
                ..update
            });
            plan.event(false, reason, msg);
        }
        return;
    }
    // Batches: parallelism at a time, `delay` apart.
    let parallelism = if cfg.parallelism == 0 {
        outdated.len()
    } else {
        cfg.parallelism as usize
    };
    let budget = parallelism.saturating_sub(in_flight);
    if budget == 0 {
        return;
    }
    if let Some(last) = update.last_batch_at {
        let waited = (view.now - last).to_std().unwrap_or_default();
        if waited < cfg.delay.0 {
            plan.requeue_in(cfg.delay.0 - waited);
            return;
        }
    }
    outdated.sort_by_key(|(s, _)| s.key.parse::<u64>().unwrap_or(u64::MAX));
    for (slot, t) in outdated.into_iter().take(budget) {
        match cfg.order {
            UpdateOrder::StopFirst => plan.shutdown(t),
            UpdateOrder::StartFirst => {
                plan.archives.push(t.clone());
                plan.creates.push(next_task(svc, idx, slot));
            }
        }
    }
    if let Some(u) = plan.status.update.as_mut() {
        u.last_batch_at = Some(view.now);
    }
    plan.requeue_in(Duration::from_secs(1));
}

fn pause(plan: &mut Plan, update: &UpdateStatus, failed: usize, total: usize, prefix: &str) {
    let paused = if update.state == UpdateState::RollbackStarted {
        UpdateState::RollbackPaused
    } else {
        UpdateState::Paused
    };
    let message = format!("{prefix}{failed} of {total} new tasks failed; update paused");
    plan.status.update = Some(UpdateStatus {
        state: paused,
        message: message.clone(),
        ..update.clone()
    });
    plan.event(true, "UpdatePaused", message);
}
