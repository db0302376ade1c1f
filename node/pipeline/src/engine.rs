//! Events in, through the filters and the routes, into the outputs' buffers; the
//! call returns once they are durable there, which is when an input may say so to
//! its sender (a forward `ack`, a tail position). With an output full under
//! `block`, the call waits: its input stops taking more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmpv::Value;
use shoal_logs::buffer::BufferError;
use shoal_logs::filter::{self, Filter};
use shoal_logs::route::Router;
use shoal_logs::{Event, EventTime};
use thiserror::Error;

use crate::output::Output;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("output {output}: {source}")]
    Buffer { output: String, source: BufferError },
}

pub struct Engine {
    filters: Vec<Filter>,
    router: Mutex<Router>,
    pub outputs: Vec<Arc<Output>>,
    /// Events taken in, and of those, filtered out and matched by no output.
    pub received: AtomicU64,
    pub filtered: AtomicU64,
    pub unmatched: AtomicU64,
}

impl Engine {
    pub fn new(filters: Vec<Filter>, router: Router, outputs: Vec<Arc<Output>>) -> Engine {
        Engine {
            filters,
            router: Mutex::new(router),
            outputs,
            received: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        }
    }

    /// Takes `events` in; Ok once each is durable in every output it routes to.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<(), EngineError> {
        self.received
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut per_output: Vec<Vec<Event>> = vec![Vec::new(); self.outputs.len()];
        // An input's events mostly share a tag: route once per run of one tag.
        let mut last: Option<(String, Vec<usize>)> = None;
        for event in events {
            let Some(event) = filter::run(&self.filters, event) else {
                self.filtered.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if last.as_ref().is_none_or(|(tag, _)| *tag != event.tag) {
                let sinks = {
                    let mut router = self.router.lock().unwrap_or_else(|p| p.into_inner());
                    router.route(&event.tag).to_vec()
                };
                last = Some((event.tag.clone(), sinks));
            }
            let sinks = last.as_ref().map_or(&[][..], |(_, s)| s.as_slice());
            let Some((&final_sink, copies)) = sinks.split_last() else {
                self.unmatched.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            for i in copies {
                if let Some(list) = per_output.get_mut(*i) {
                    list.push(event.clone());
                }
            }
            if let Some(list) = per_output.get_mut(final_sink) {
                list.push(event);
            }
        }
        let per_output: Vec<Vec<Vec<u8>>> = per_output
            .iter()
            .map(|events| events.iter().map(shoal_logs::buffer::body).collect())
            .collect();
        self.write(per_output).await
    }

    /// Lines of one tag whose records are `{"message": line}` (an input with no
    /// parser): when no filter takes the tag, they are encoded straight into buffer
    /// records, with no event built per line; otherwise they go as events.
    pub async fn ingest_lines(&self, tag: &str, lines: &[String]) -> Result<(), EngineError> {
        if self.filters.iter().any(|f| f.pattern.matches(tag)) {
            let now = EventTime::now();
            let events = lines
                .iter()
                .map(|l| Event {
                    tag: tag.to_string(),
                    time: now,
                    record: Value::Map(vec![(Value::from("message"), Value::from(l.as_str()))]),
                })
                .collect();
            return self.ingest(events).await;
        }
        self.received
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        let sinks = {
            let mut router = self.router.lock().unwrap_or_else(|p| p.into_inner());
            router.route(tag).to_vec()
        };
        if sinks.is_empty() {
            self.unmatched
                .fetch_add(lines.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        let now = EventTime::now();
        let bodies: Vec<Vec<u8>> = lines
            .iter()
            .map(|l| shoal_logs::buffer::message_body(tag, now, l))
            .collect();
        let mut per_output: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.outputs.len()];
        let Some((&last, copies)) = sinks.split_last() else {
            return Ok(());
        };
        for i in copies {
            if let Some(list) = per_output.get_mut(*i) {
                list.clone_from(&bodies);
            }
        }
        if let Some(list) = per_output.get_mut(last) {
            *list = bodies;
        }
        self.write(per_output).await
    }

    /// Appends each output's bodies and makes them durable; under `block`, waits
    /// while an output is full.
    async fn write(&self, per_output: Vec<Vec<Vec<u8>>>) -> Result<(), EngineError> {
        for (output, bodies) in self.outputs.iter().zip(per_output) {
            if bodies.is_empty() {
                continue;
            }
            let mut rest = &bodies[..];
            while !rest.is_empty() {
                let taken = output
                    .append_bodies(rest)
                    .map_err(|source| EngineError::Buffer {
                        output: output.name.clone(),
                        source,
                    })?;
                rest = &rest[taken..];
                if !rest.is_empty() {
                    // Full under `block`: what is in goes out first.
                    let _ = output.sync();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            output.sync().map_err(|source| EngineError::Buffer {
                output: output.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}
