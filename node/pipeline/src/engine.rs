//! Events in, through the filters and the routes, into the outputs' buffers; the
//! call returns once they are durable there, which is when an input may say so to
//! its sender (a forward `ack`, a tail position). With an output full under
//! `block`, the call waits: its input stops taking more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_logs::buffer::BufferError;
use shoal_logs::filter::{self, Filter};
use shoal_logs::route::Router;
use shoal_logs::Event;
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
        for (output, events) in self.outputs.iter().zip(per_output) {
            let mut rest = &events[..];
            while !rest.is_empty() {
                let taken = output.append(rest).map_err(|source| EngineError::Buffer {
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
