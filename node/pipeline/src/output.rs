//! One output: its file buffer, which inputs fill through the engine, and the worker
//! that delivers the buffer's chunks, oldest first, to its sink. A failed chunk is
//! tried again as the retry policy says; a chunk given up on (out of attempts, or
//! refused for good) is set aside in the dead-letter directory and counted, never
//! dropped. When the buffer is full, `block` makes inputs wait (a forward client
//! gets no ack, so it keeps its events) and `drop_oldest` drops the oldest chunk,
//! counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_logs::buffer::{BufferError, FileBuffer};
use shoal_logs::retry::{random_unit, Change, Health, Next, Policy};
use shoal_logs::Event;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sinks::Sink;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Block,
    DropOldest,
}

/// What an output has done, for its pipeline's status.
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub set_aside: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Output {
    pub name: String,
    buffer: Mutex<FileBuffer>,
    overflow: Overflow,
    policy: Policy,
    flush_interval: Duration,
    dead_letter: PathBuf,
    pub counters: Counters,
    health: Mutex<Health>,
    changes: Mutex<Vec<Change>>,
    /// Told when events are appended: the worker may have a chunk to send.
    appended: Notify,
}

/// A chunk due for delivery: decoded, or as it is on disk.
enum Due {
    Events(shoal_logs::buffer::Chunk),
    Records(u64, Vec<u8>),
}

/// The buffer is full and the overflow policy is `block`.
#[derive(Debug)]
pub struct Full;

impl Output {
    pub fn new(
        name: &str,
        buffer: FileBuffer,
        overflow: Overflow,
        policy: Policy,
        flush_interval: Duration,
        dead_letter: PathBuf,
    ) -> Arc<Output> {
        Arc::new(Output {
            name: name.to_string(),
            buffer: Mutex::new(buffer),
            overflow,
            policy,
            flush_interval,
            dead_letter,
            counters: Counters::default(),
            health: Mutex::new(Health::default()),
            changes: Mutex::new(Vec::new()),
            appended: Notify::new(),
        })
    }

    fn buffer(&self) -> MutexGuard<'_, FileBuffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes waiting in the buffer.
    pub fn buffered(&self) -> u64 {
        self.buffer().held()
    }

    /// How long the oldest undelivered event has waited.
    pub fn oldest_age(&self) -> Option<Duration> {
        self.buffer().oldest_age()
    }

    /// Why the sink is failing, while it is.
    pub fn failing(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failing()
            .map(str::to_string)
    }

    /// Health changes since the last call (failing, recovered), for Events.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Appends events (not yet durable: [`Output::sync`]). Err(Full) only under
    /// `block`; the caller waits and tries the rest again.
    pub fn append(&self, events: &[Event]) -> Result<usize, BufferError> {
        let bodies: Vec<Vec<u8>> = events.iter().map(shoal_logs::buffer::body).collect();
        self.append_bodies(&bodies)
    }

    /// As [`Output::append`], for events already encoded as buffer bodies; how many
    /// were taken.
    pub fn append_bodies(&self, bodies: &[Vec<u8>]) -> Result<usize, BufferError> {
        let mut buffer = self.buffer();
        for (i, b) in bodies.iter().enumerate() {
            loop {
                match buffer.append_body(b) {
                    Ok(()) => break,
                    Err(BufferError::Full { .. }) if self.overflow == Overflow::DropOldest => {
                        buffer.seal()?;
                        let dropped = buffer.drop_oldest()?;
                        if dropped == 0 {
                            // Nothing older to drop: this one cannot fit.
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        tracing::warn!(output = %self.name, events = dropped, "buffer full: dropped the oldest chunk");
                        self.counters
                            .dropped
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                    }
                    Err(BufferError::Full { .. }) => return Ok(i),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(bodies.len())
    }

    /// Makes what was appended durable, and wakes the worker.
    pub fn sync(&self) -> Result<(), BufferError> {
        self.buffer().sync()?;
        self.appended.notify_one();
        Ok(())
    }

    /// Writes the events a sink refused for good to the dead-letter directory, one
    /// JSON line each with the reason, and counts them set aside.
    fn set_aside_events(&self, seq: u64, events: &[Event], refused: &[(usize, String)]) {
        use std::io::Write;
        let mut text = Vec::new();
        for (i, why) in refused {
            if let Some(e) = events.get(*i) {
                let line = serde_json::json!({
                    "tag": e.tag,
                    "time": e.time.secs,
                    "record": shoal_logs::format::to_json(&e.record),
                    "refused": why,
                });
                let _ = serde_json::to_writer(&mut text, &line);
                text.push(b'\n');
            }
        }
        let path = self.dead_letter.join(format!("{seq:020}.refused.json"));
        let written = std::fs::create_dir_all(&self.dead_letter).and_then(|()| {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&text)?;
            f.sync_all()
        });
        match written {
            Ok(()) => {
                tracing::warn!(output = %self.name, events = refused.len(), file = %path.display(), "the receiver refused events; set aside")
            }
            Err(e) => {
                tracing::error!(output = %self.name, error = %e, file = %path.display(), "setting refused events aside")
            }
        }
        self.counters
            .set_aside
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
    }

    /// Delivers chunks to `sink` until `shutdown`.
    pub async fn run(self: Arc<Self>, sink: Sink, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let chunk = {
                let mut buffer = self.buffer();
                // A forward sink sends the records as they are on disk; the others
                // take decoded events.
                let due = buffer.tick().and_then(|()| {
                    if sink.takes_records() {
                        buffer
                            .oldest_raw()
                            .map(|c| c.map(|(seq, bytes)| Due::Records(seq, bytes)))
                    } else {
                        buffer.oldest().map(|c| c.map(Due::Events))
                    }
                });
                match due {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(output = %self.name, error = %e, "reading the buffer");
                        None
                    }
                }
            };
            let Some(chunk) = chunk else {
                tokio::select! {
                    _ = self.appended.notified() => {}
                    _ = tokio::time::sleep(self.flush_interval) => {}
                    _ = shutdown.cancelled() => return,
                }
                // Let a burst gather into the open chunk before it is sealed.
                let _ = tokio::time::timeout(self.flush_interval, shutdown.cancelled()).await;
                let _ = self.buffer().seal();
                continue;
            };
            // A chunk's records are found (and checked) once, whatever the retries.
            let records = match &chunk {
                Due::Records(_, bytes) => shoal_logs::buffer::bodies(bytes),
                Due::Events(_) => Vec::new(),
            };
            let (seq, n) = match &chunk {
                Due::Events(c) => (c.seq, c.events.len() as u64),
                Due::Records(seq, _) => (*seq, records.len() as u64),
            };
            let mut attempts = 0;
            loop {
                attempts += 1;
                let result = match &chunk {
                    Due::Events(c) => sink.send(&c.events).await,
                    Due::Records(..) => sink.send_records(&records).await.map(|()| Vec::new()),
                };
                let said = self
                    .health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&result.as_ref().map(|_| ()).map_err(|e| e.why.clone()));
                if let Some(change) = said {
                    match &change {
                        Change::Failing(why) => {
                            tracing::warn!(output = %self.name, error = %why, "output failing")
                        }
                        Change::Recovered => {
                            tracing::info!(output = %self.name, "output recovered")
                        }
                    }
                    self.changes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(change);
                }
                let next = match result {
                    Ok(refused) => {
                        if let (false, Due::Events(c)) = (refused.is_empty(), &chunk) {
                            self.set_aside_events(seq, &c.events, &refused);
                        }
                        if let Err(e) = self.buffer().delivered(seq) {
                            tracing::error!(output = %self.name, error = %e, "removing a delivered chunk");
                        }
                        self.counters
                            .delivered
                            .fetch_add(n - refused.len() as u64, Ordering::Relaxed);
                        break;
                    }
                    Err(e) if !e.retry => Next::GiveUp,
                    Err(_) => self.policy.after_failure(attempts, random_unit()),
                };
                match next {
                    Next::RetryIn(wait) => {
                        self.counters.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    Next::GiveUp => {
                        match self.buffer().set_aside(seq, &self.dead_letter) {
                            Ok(path) => {
                                tracing::warn!(output = %self.name, chunk = %path.display(), "gave up on a chunk; set aside")
                            }
                            Err(e) => {
                                tracing::error!(output = %self.name, error = %e, "setting a chunk aside")
                            }
                        }
                        self.counters.set_aside.fetch_add(n, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}
