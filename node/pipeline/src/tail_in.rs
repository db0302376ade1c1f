//! The tail input: follows files (`shoal_logs::tail`), parses each line, and moves
//! its positions on only after the engine has the lines durable in every output's
//! buffer, so a crash reads them again rather than skipping them. While an output
//! under `block` is full, the engine waits and so does this: the files keep the
//! lines until there is room.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use shoal_logs::parse::Parser;
use shoal_logs::tail::Tail;
use shoal_logs::{Event, EventTime};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

pub struct TailIn {
    pub tag: String,
    /// None: the line is the record's `message`.
    pub parser: Option<Parser>,
    pub engine: Arc<Engine>,
    pub poll: Duration,
    /// Lines the parser could not read (kept as `{message, error}`).
    pub unparsed: AtomicU64,
}

impl TailIn {
    fn event(&self, text: String) -> Event {
        let now = EventTime::now();
        let Some(parser) = &self.parser else {
            return Event {
                tag: self.tag.clone(),
                time: now,
                record: Value::Map(vec![(Value::from("message"), Value::from(text))]),
            };
        };
        match parser.parse(&text) {
            Ok(p) => Event {
                tag: self.tag.clone(),
                time: p.time.unwrap_or(now),
                record: p.record,
            },
            Err(why) => {
                self.unparsed.fetch_add(1, Ordering::Relaxed);
                Event {
                    tag: self.tag.clone(),
                    time: now,
                    record: Value::Map(vec![
                        (Value::from("message"), Value::from(text)),
                        (Value::from("error"), Value::from(why.to_string())),
                    ]),
                }
            }
        }
    }

    /// Follows `tail` until `shutdown`. The tail's file reads are short and local;
    /// they run on a blocking thread so a slow disk holds up no other task.
    pub async fn run(self: Arc<Self>, tail: Tail, shutdown: CancellationToken) {
        let mut tail = Some(tail);
        while !shutdown.is_cancelled() {
            let Some(mut t) = tail.take() else { return };
            let polled = tokio::task::spawn_blocking(move || {
                let lines = t.poll();
                (t, lines)
            })
            .await;
            let Ok((t, lines)) = polled else { return };
            tail = Some(t);
            let lines = match lines {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(tag = %self.tag, error = %e, "tail input");
                    Vec::new()
                }
            };
            if !lines.is_empty() {
                let events: Vec<Event> = lines.into_iter().map(|l| self.event(l.text)).collect();
                // The same lines until they are durable: positions never pass a line
                // that is not.
                let mut pause = Duration::from_millis(100);
                while let Err(e) = self.engine.ingest(events.clone()).await {
                    tracing::error!(tag = %self.tag, error = %e, "tail input: trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                if let Some(t) = &tail {
                    if let Err(e) = t.commit() {
                        tracing::warn!(tag = %self.tag, error = %e, "tail input: saving positions");
                    }
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
