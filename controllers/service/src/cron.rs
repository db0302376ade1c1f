//! Cron services: a run (a job of `job.completions` tasks) per tick of the schedule,
//! with a concurrency policy and a history limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shoal_api::{ConcurrencyPolicy, Task, TaskState, Timestamp};

use crate::plan::{state, Index, Plan, Slot, View};
use crate::template::{is_history, label, RUN};

/// Runs are named by their tick, to the second, in UTC.
fn run_id(tick: Timestamp) -> String {
    tick.format("%Y%m%d%H%M%S").to_string()
}

/// The latest tick in (after, now], and the first tick after now.
fn ticks(
    schedule: &croner::Cron,
    after: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let mut due = None;
    let mut cursor = after;
    for _ in 0..10_000 {
        match schedule.find_next_occurrence(&cursor, false) {
            Ok(next) if next <= now => {
                due = Some(next);
                cursor = next;
            }
            Ok(next) => return (due, Some(next)),
            Err(_) => return (due, None),
        }
    }
    (due, None)
}

/// Decides whether a run starts now, and returns the slots of every run still going.
pub fn plan_runs(view: &View, idx: &Index, plan: &mut Plan) -> Vec<Slot> {
    let svc = view.svc;
    let Some(cron) = &svc.spec.cron else {
        return Vec::new();
    };
    let Ok(schedule) = shoal_api::parse_schedule(&cron.schedule) else {
        return Vec::new();
    };
    let job = svc.spec.job.clone().unwrap_or_default();
    let name = &svc.metadata.name;

    let mut runs: BTreeMap<String, Vec<&Arc<Task>>> = BTreeMap::new();
    for t in idx.live.values() {
        if let Some(run) = label(t, RUN) {
            runs.entry(run.to_string()).or_default().push(t);
        }
    }
    // A run is over when enough tasks completed, or when it was stopped (replaced).
    let finished = |tasks: &[&Arc<Task>]| {
        let complete = tasks
            .iter()
            .filter(|t| state(t) == TaskState::Complete)
            .count();
        let stopped = !tasks.is_empty()
            && tasks.iter().all(|t| state(t).is_terminal())
            && tasks
                .iter()
                .any(|t| t.spec.desired_state == shoal_api::DesiredState::Shutdown);
        complete >= job.completions as usize || stopped
    };
    let mut active: Vec<String> = runs
        .iter()
        .filter(|(_, ts)| !finished(ts))
        .map(|(r, _)| r.clone())
        .collect();

    let after = plan
        .status
        .last_schedule_time
        .or(svc.metadata.creation_timestamp)
        .unwrap_or_else(Utc::now);
    let (due, next) = ticks(&schedule, after, view.now);
    if let Some(tick) = due {
        plan.status.last_schedule_time = Some(tick);
        let id = run_id(tick);
        match cron.concurrency {
            ConcurrencyPolicy::Forbid if !active.is_empty() => {
                plan.event(
                    false,
                    "RunSkipped",
                    format!("run {id} skipped: run {} is still going", active.join(", ")),
                );
            }
            policy => {
                if policy == ConcurrencyPolicy::Replace {
                    for r in &active {
                        for t in runs
                            .get(r)
                            .into_iter()
                            .flatten()
                            .filter(|t| !state(t).is_terminal())
                        {
                            plan.shutdown(t);
                        }
                    }
                    active.clear();
                }
                if !runs.contains_key(&id) {
                    plan.event(false, "RunStarted", format!("run {id} started"));
                    active.push(id);
                }
            }
        }
    }
    if let Some(next) = next {
        plan.requeue_in((next - view.now).to_std().unwrap_or(Duration::from_secs(1)));
    }

    // Keep the newest `history` finished runs; delete the tasks of older ones.
    let finished_runs: Vec<&String> = runs.keys().filter(|r| !active.contains(r)).collect();
    let excess = finished_runs.len().saturating_sub(cron.history as usize);
    for r in finished_runs.into_iter().take(excess) {
        for t in idx
            .by_slot
            .values()
            .flatten()
            .filter(|t| label(t, RUN) == Some(r.as_str()))
        {
            plan.deletes.push(Arc::clone(t));
        }
    }

    let mut slots = Vec::new();
    for run in &active {
        for i in 1..=job.completions {
            slots.push(Slot {
                key: format!("{run}.{i}"),
                name: format!("{name}.{run}.{i}"),
                node: None,
                run: Some(run.clone()),
            });
        }
    }
    // Tasks of finished runs stay as they are (kept as history), so their slots stay
    // "wanted" for the slot engine without creating anything new.
    for (run, tasks) in &runs {
        if active.contains(run) {
            continue;
        }
        for t in tasks.iter().filter(|t| !is_history(t)) {
            slots.push(Slot {
                key: label(t, crate::template::SLOT)
                    .unwrap_or_default()
                    .to_string(),
                name: t.metadata.name.clone(),
                node: None,
                run: Some(run.clone()),
            });
        }
    }
    slots
}
