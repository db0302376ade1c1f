//! Task status reports from every node, written together (Swarm's dispatcher batches
//! them the same way). A thousand nodes each reporting a few transitions would
//! otherwise be thousands of small reads and transactions; here one writer takes
//! whatever has arrived while it was busy, reads the tasks from the dispatcher's watch
//! cache instead of the store, and writes them in batched, compare-guarded
//! transactions. A report that loses a race (the cache was behind) is retried on its
//! own, reading the store.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use shoal_api::{Task, TaskState, TaskStatus};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::dispatcher::Dispatcher;
use crate::pb::TaskStatusReport;

/// Reports taken into one round; each round is written as batches of up to 100.
const ROUND: usize = 1000;
/// Tasks remembered as last written, for when the cache has not caught up yet.
const RECENT_MAX: usize = 100_000;

struct Item {
    node: Arc<str>,
    report: TaskStatusReport,
    done: oneshot::Sender<Result<(), String>>,
}

pub struct StatusWriter {
    tx: mpsc::UnboundedSender<Item>,
}

impl StatusWriter {
    pub fn start(
        objects: ObjectStore,
        dispatcher: Arc<Dispatcher>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            objects,
            dispatcher,
            recent: HashMap::new(),
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = writer.run(rx) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Arc::new(StatusWriter { tx })
    }

    /// Applies `reports` from `node`; returns one message per report refused.
    pub async fn report(&self, node: &str, reports: Vec<TaskStatusReport>) -> Vec<String> {
        let node: Arc<str> = node.into();
        let mut waiting = Vec::with_capacity(reports.len());
        for report in reports {
            let (done, rx) = oneshot::channel();
            let name = report.task.clone();
            let item = Item {
                node: node.clone(),
                report,
                done,
            };
            if self.tx.send(item).is_err() {
                return vec![format!("{name}: the server is shutting down")];
            }
            waiting.push((name, rx));
        }
        let mut errors = Vec::new();
        for (name, rx) in waiting {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(format!("{name}: the server is shutting down")),
            }
        }
        errors
    }
}

struct Writer {
    objects: ObjectStore,
    dispatcher: Arc<Dispatcher>,
    recent: HashMap<String, Arc<Task>>,
}

fn revision(t: &Task) -> i64 {
    t.metadata.revision().unwrap_or(0)
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut round = Vec::with_capacity(ROUND);
        while rx.recv_many(&mut round, ROUND).await > 0 {
            self.write_round(std::mem::take(&mut round)).await;
        }
    }

    /// The freshest copy we know: the watch cache, or what we wrote ourselves.
    fn cached(&mut self, name: &str) -> Option<Arc<Task>> {
        let cached = self.dispatcher.task_json(name).and_then(|(json, rev)| {
            let mut task = serde_json::from_str::<Task>(&json).ok()?;
            task.metadata.resource_version = Some(rev.to_string());
            Some(Arc::new(task))
        });
        match (cached, self.recent.get(name)) {
            (Some(c), Some(r)) if revision(r) > revision(&c) => Some(r.clone()),
            (Some(c), Some(_)) => {
                self.recent.remove(name);
                Some(c)
            }
            (c, r) => c.or_else(|| r.cloned()),
        }
    }

    async fn write_round(&mut self, items: Vec<Item>) {
        // Reports for one task fold into one write, in the order they came.
        let mut order: Vec<String> = Vec::new();
        let mut by_task: HashMap<String, (Option<Task>, Vec<Item>)> = HashMap::new();
        for item in items {
            let name = item.report.task.clone();
            if !by_task.contains_key(&name) {
                let task = self.cached(&name).map(|t| (*t).clone());
                order.push(name.clone());
                by_task.insert(name.clone(), (task, Vec::new()));
            }
            if let Some((_, items)) = by_task.get_mut(&name) {
                items.push(item);
            }
        }
        let mut writes: Vec<(Task, Vec<Item>)> = Vec::new();
        let mut careful: Vec<Item> = Vec::new();
        for name in order {
            let Some((task, items)) = by_task.remove(&name) else {
                continue;
            };
            let Some(mut task) = task else {
                careful.extend(items);
                continue;
            };
            let mut folded = Vec::new();
            let mut changed = false;
            for item in items {
                match parse(&item.report)
                    .and_then(|r| next_status(&item.node, &item.report, &task, &r))
                {
                    Ok(Some(status)) => {
                        task.status = Some(status);
                        changed = true;
                        folded.push(item);
                    }
                    Ok(None) => {
                        let _ = item.done.send(Ok(()));
                    }
                    // Perhaps only our copy is behind (not yet bound here): ask the store.
                    Err(_) => careful.push(item),
                }
            }
            if changed {
                writes.push((task, folded));
            }
        }
        let (tasks, waiting): (Vec<Task>, Vec<Vec<Item>>) = writes.into_iter().unzip();
        let results = self.objects.put_many(tasks, false).await;
        for (items, r) in waiting.into_iter().zip(results) {
            match r {
                Ok(written) => {
                    if self.recent.len() >= RECENT_MAX {
                        self.recent.clear();
                    }
                    self.recent
                        .insert(written.metadata.name.clone(), Arc::new(written));
                    for item in items {
                        let _ = item.done.send(Ok(()));
                    }
                }
                Err(_) => careful.extend(items),
            }
        }
        // One task's reports in the order they came; different tasks at once.
        let mut per_task: HashMap<String, Vec<Item>> = HashMap::new();
        for item in careful {
            per_task
                .entry(item.report.task.clone())
                .or_default()
                .push(item);
        }
        let objects = &self.objects;
        futures::future::join_all(per_task.into_values().map(|items| async move {
            for item in items {
                let r = apply_report(objects, &item.node, &item.report).await;
                let _ = item.done.send(r);
            }
        }))
        .await;
    }
}

fn parse(report: &TaskStatusReport) -> Result<TaskStatus, String> {
    serde_json::from_str(&report.status_json)
        .map_err(|e| format!("{}: status is not a TaskStatus: {e}", report.task))
}

/// One report on its own, reading the store: for conflicts and refusals.
async fn apply_report(
    objects: &ObjectStore,
    node: &str,
    report: &TaskStatusReport,
) -> Result<(), String> {
    let reported = parse(report)?;
    let mut refused = None;
    let written = objects
        .modify::<Task>(&report.task, |task| {
            match next_status(node, report, task, &reported) {
                Ok(Some(status)) => {
                    task.status = Some(status);
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(why) => {
                    refused = Some(why);
                    Ok(false)
                }
            }
        })
        .await;
    if let Some(why) = refused {
        return Err(why);
    }
    match written {
        Ok(_) => Ok(()),
        Err(ObjectError::NotFound { .. }) => Err(format!("{}: no such task", report.task)),
        Err(e) => Err(format!("{}: {e}", report.task)),
    }
}

/// The task's status after `reported`: Err when the node may not report it, Ok(None)
/// when nothing changes (including any attempt to leave a terminal state).
fn next_status(
    node: &str,
    report: &TaskStatusReport,
    task: &Task,
    reported: &TaskStatus,
) -> Result<Option<TaskStatus>, String> {
    if task.spec.node.as_deref() != Some(node) {
        return Err(format!("{}: not assigned to node {node}", report.task));
    }
    if !report.uid.is_empty() && task.metadata.uid.as_deref() != Some(report.uid.as_str()) {
        return Err(format!(
            "{}: report is for an older incarnation",
            report.task
        ));
    }
    let mut status = task.status.clone().unwrap_or_default();
    // An ended task stays ended, unless `shoal start` asked for it to run again since
    // (looked up only then: this runs for every report from every node).
    let leaves_end = status.state.is_terminal() && status.state != reported.state;
    if leaves_end
        && !task.start_requested().is_some_and(|asked| {
            status
                .last_transition_time
                .is_none_or(|ended| asked > ended)
        })
    {
        return Ok(None);
    }
    if status.state != reported.state {
        status.last_transition_time = Some(Utc::now());
        if reported.state == TaskState::Running {
            status.started_at = Some(Utc::now());
        }
    }
    status.state = reported.state;
    status.message = reported.message.clone();
    status.exit_code = reported.exit_code;
    status.container_id = reported.container_id.clone();
    status.addresses = reported.addresses.clone();
    status.health = reported.health;
    status.restart_count = reported.restart_count;
    Ok((task.status.as_ref() != Some(&status)).then_some(status))
}
