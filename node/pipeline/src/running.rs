//! A pipeline running on this node: its engine, its inputs' counters, and what it
//! reports, counters and rates since the last report, and each output's health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_api::{PipelineInputStatus, PipelineNodeStatus, PipelineOutputStatus};
use shoal_logs::retry::Change;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// Events waiting this long (seconds) with none going out: the pipeline is stalled.
const STALLED_AFTER: u64 = 30;

/// Something a user should hear of, as an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Happened {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What one input has taken.
#[derive(Clone)]
pub struct InputCounters {
    pub name: String,
    pub events: Arc<AtomicU64>,
    pub unparsed: Arc<AtomicU64>,
}

impl InputCounters {
    pub fn new(name: &str) -> InputCounters {
        InputCounters {
            name: name.to_string(),
            events: Arc::default(),
            unparsed: Arc::default(),
        }
    }
}

pub struct Running {
    pub name: String,
    pub generation: i64,
    engine: Arc<Engine>,
    inputs: Vec<InputCounters>,
    stop: CancellationToken,
    /// When, and at what totals (in, out), the last status was taken.
    last: Mutex<(Instant, u64, u64)>,
    /// Events not yet taken (what starting found).
    pending: Mutex<Vec<Happened>>,
    /// Per output, the dropped count last said.
    dropped_said: Mutex<Vec<u64>>,
}

impl Running {
    pub(crate) fn new(
        name: &str,
        generation: i64,
        engine: Arc<Engine>,
        inputs: Vec<InputCounters>,
        stop: CancellationToken,
        found: Vec<Happened>,
    ) -> Running {
        Running {
            name: name.to_string(),
            generation,
            engine,
            inputs,
            stop,
            last: Mutex::new((Instant::now(), 0, 0)),
            pending: Mutex::new(found),
            dropped_said: Mutex::new(Vec::new()),
        }
    }

    /// Stops its inputs and outputs; what is buffered stays for the next start.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// What happened since the last call, for Events: outputs failing and
    /// recovering, events dropped under `drop_oldest`, chunks quarantined at start.
    pub fn take_events(&self) -> Vec<Happened> {
        let mut out = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut dropped = self.dropped_said.lock().unwrap_or_else(|p| p.into_inner());
        for (i, o) in self.engine.outputs.iter().enumerate() {
            for change in o.take_changes() {
                out.push(match change {
                    Change::Failing(why) => Happened {
                        warning: true,
                        reason: "OutputFailing",
                        message: format!("output {} is failing: {why}", o.name),
                    },
                    Change::Recovered => Happened {
                        warning: false,
                        reason: "OutputRecovered",
                        message: format!("output {} delivers again", o.name),
                    },
                });
            }
            let now = o.counters.dropped.load(Ordering::Relaxed);
            let said = dropped.get(i).copied().unwrap_or(0);
            if now > said {
                out.push(Happened {
                    warning: true,
                    reason: "EventsDropped",
                    message: format!(
                        "output {}: its buffer was full; dropped the oldest {} event(s) (overflow: drop_oldest)",
                        o.name,
                        now - said
                    ),
                });
            }
            if dropped.len() <= i {
                dropped.resize(i + 1, 0);
            }
            dropped[i] = now;
        }
        out
    }

    /// This node's status of the pipeline, with rates since the last call.
    pub fn status(&self, node: &str) -> PipelineNodeStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let outputs: Vec<PipelineOutputStatus> = self
            .engine
            .outputs
            .iter()
            .map(|o| PipelineOutputStatus {
                name: o.name.clone(),
                delivered: get(&o.counters.delivered),
                retried: get(&o.counters.retried),
                set_aside: get(&o.counters.set_aside),
                dropped: get(&o.counters.dropped),
                buffered_bytes: o.buffered(),
                failing: o.failing(),
            })
            .collect();
        let events_in = get(&self.engine.received);
        let events_out: u64 = outputs.iter().map(|o| o.delivered).sum();
        let now = Instant::now();
        let (in_rate, out_rate) = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let secs = now.duration_since(last.0).as_secs_f64().max(0.001);
            let rates = (
                events_in.saturating_sub(last.1) as f64 / secs,
                events_out.saturating_sub(last.2) as f64 / secs,
            );
            *last = (now, events_in, events_out);
            rates
        };
        let oldest_unsent = self
            .engine
            .outputs
            .iter()
            .filter_map(|o| o.oldest_age())
            .max()
            .map(|d| d.as_secs());
        // Running but forwarding nothing (Fluent Bit #11847) is said as such.
        let stalled = out_rate == 0.0 && oldest_unsent.is_some_and(|s| s >= STALLED_AFTER);
        let (state, message) = if stalled {
            let failing: Vec<String> = outputs
                .iter()
                .filter_map(|o| Some(format!("{}: {}", o.name, o.failing.as_ref()?)))
                .collect();
            (
                "Stalled",
                format!(
                    "events have waited {}s and none went out; {}",
                    oldest_unsent.unwrap_or(0),
                    if failing.is_empty() {
                        "no output reports a failure".to_string()
                    } else {
                        failing.join("; ")
                    }
                ),
            )
        } else {
            ("Running", String::new())
        };
        PipelineNodeStatus {
            node: node.to_string(),
            generation: self.generation,
            state: state.into(),
            message,
            reported: Some(chrono::Utc::now()),
            events_in,
            events_out,
            in_per_second: (in_rate * 10.0).round() / 10.0,
            out_per_second: (out_rate * 10.0).round() / 10.0,
            filtered: get(&self.engine.filtered),
            unmatched: get(&self.engine.unmatched),
            retried: outputs.iter().map(|o| o.retried).sum(),
            set_aside: outputs.iter().map(|o| o.set_aside).sum(),
            dropped: outputs.iter().map(|o| o.dropped).sum(),
            buffered_bytes: outputs.iter().map(|o| o.buffered_bytes).sum(),
            oldest_unsent_seconds: oldest_unsent,
            inputs: self
                .inputs
                .iter()
                .map(|i| PipelineInputStatus {
                    name: i.name.clone(),
                    events: get(&i.events),
                    unparsed: get(&i.unparsed),
                })
                .collect(),
            outputs,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
