//! The tail input, and the tasks input's reader of each task's json-file log: follows
//! files (`shoal_logs::tail`), joins multiline events, parses each, and moves its
//! positions on only after the engine has the events durable in every output's
//! buffer, so a crash reads them again rather than skipping them. Lines of an event
//! still being joined are held back: the saved position stays at their start. While
//! an output under `block` is full, the engine waits and so does this: the files
//! keep the lines until there is room.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmpv::Value;
use shoal_logs::parse::multiline::Multiline;
use shoal_logs::parse::Parser;
use shoal_logs::tail::{Line, Tail};
use shoal_logs::{Event, EventTime};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// What a line of the followed files is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Text: the record is what the parser makes of it, or `{message}`.
    Text,
    /// A json-file log line (`{log, stream, time}`): the record is `{log, stream}`
    /// at the line's time, and the parser reads `log` into more fields.
    JsonFile,
}

/// How multiline events are joined.
#[derive(Debug, Clone)]
pub struct Joining {
    pub start: regex::Regex,
    pub timeout: Duration,
}

pub struct TailIn {
    pub tag: String,
    pub lines: Lines,
    pub parser: Option<Parser>,
    pub joining: Option<Joining>,
    pub engine: Arc<Engine>,
    pub poll: Duration,
    /// Events made, and of those, lines the parser could not read (kept with an
    /// `error` field beside the text).
    pub events: Arc<AtomicU64>,
    pub unparsed: Arc<AtomicU64>,
}

/// The longest multiline event; past it the next line starts another.
const MAX_EVENT: usize = 1 << 20;

impl TailIn {
    fn parsed(&self, text: &str, mut record: Vec<(Value, Value)>, time: EventTime) -> Event {
        let mut time = time;
        if let Some(parser) = &self.parser {
            match parser.parse(text) {
                Ok(p) => {
                    if let Some(t) = p.time {
                        time = t;
                    }
                    if let Value::Map(fields) = p.record {
                        // What the parser read replaces the raw text.
                        record.retain(|(k, _)| !matches!(k.as_str(), Some("message" | "log")));
                        record.extend(fields);
                    }
                }
                Err(why) => {
                    self.unparsed.fetch_add(1, Ordering::Relaxed);
                    record.push((Value::from("error"), Value::from(why.to_string())));
                }
            }
        }
        Event {
            tag: self.tag.clone(),
            time,
            record: Value::Map(record),
        }
    }

    /// Runs `ingest` until the engine has the events durable, backing off between
    /// tries; false if `shutdown` came first.
    async fn until_durable<F, Fut>(&self, shutdown: &CancellationToken, ingest: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::engine::EngineError>>,
    {
        let mut pause = Duration::from_millis(100);
        while let Err(e) = ingest().await {
            tracing::error!(tag = %self.tag, error = %e, "tail input: trying again");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return false,
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
        true
    }

    /// Lines of text with no parser and no joining: each record is `{message}`.
    fn plain(&self) -> bool {
        self.lines == Lines::Text && self.parser.is_none() && self.joining.is_none()
    }

    /// One event from one (joined) line.
    fn event(&self, text: String) -> Event {
        match self.lines {
            Lines::Text if self.parser.is_none() => Event {
                tag: self.tag.clone(),
                time: EventTime::now(),
                record: Value::Map(vec![(Value::from("message"), Value::from(text))]),
            },
            Lines::Text => {
                let record = vec![(Value::from("message"), Value::from(text.as_str()))];
                self.parsed(&text, record, EventTime::now())
            }
            Lines::JsonFile => match shoal_logs::task_log::event(&text, &self.tag) {
                Ok(e) => {
                    let Value::Map(record) = e.record else {
                        return e;
                    };
                    let log = shoal_logs::parse::field(&Value::Map(record.clone()), "log")
                        .unwrap_or("")
                        .to_string();
                    self.parsed(&log, record, e.time)
                }
                Err(why) => {
                    self.unparsed.fetch_add(1, Ordering::Relaxed);
                    Event {
                        tag: self.tag.clone(),
                        time: EventTime::now(),
                        record: Value::Map(vec![
                            (Value::from("log"), Value::from(text)),
                            (Value::from("error"), Value::from(why.to_string())),
                        ]),
                    }
                }
            },
        }
    }

    /// The text multiline joining looks at: a task line's `log`, a file's line.
    fn text_of(&self, line: &str) -> Option<String> {
        match self.lines {
            Lines::Text => Some(line.to_string()),
            Lines::JsonFile => shoal_logs::task_log::event(line, &self.tag)
                .ok()
                .and_then(|e| shoal_logs::parse::field(&e.record, "log").map(str::to_string)),
        }
    }

    /// Follows `tail` until `shutdown`. The tail's file reads are short and local;
    /// they run on a blocking thread so a slow disk holds up no other task.
    pub async fn run(self: Arc<Self>, tail: Tail, shutdown: CancellationToken) {
        let mut tail = Some(tail);
        let mut joins: HashMap<PathBuf, Join> = HashMap::new();
        while !shutdown.is_cancelled() {
            let Some(mut t) = tail.take() else { return };
            let polled = tokio::task::spawn_blocking(move || {
                let lines = t.poll();
                (t, lines)
            })
            .await;
            let Ok((t, lines)) = polled else { return };
            tail = Some(t);
            let lines = lines.unwrap_or_else(|e| {
                tracing::warn!(tag = %self.tag, error = %e, "tail input");
                Vec::new()
            });
            let had_lines = !lines.is_empty();
            if had_lines && self.plain() {
                // Lines as they are: encoded straight into records.
                let texts: Vec<String> = lines.into_iter().map(|l| l.text).collect();
                self.events.fetch_add(texts.len() as u64, Ordering::Relaxed);
                let durable = self
                    .until_durable(&shutdown, || self.engine.ingest_lines(&self.tag, &texts))
                    .await;
                if !durable {
                    return;
                }
                if let Some(t) = &tail {
                    if let Err(e) = t.commit() {
                        tracing::warn!(tag = %self.tag, error = %e, "tail input: saving positions");
                    }
                }
                continue;
            }
            let events = self.events_of(lines, &mut joins);
            if !events.is_empty() {
                self.events
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                // The same events until they are durable: positions never pass a
                // line that is not.
                let durable = self
                    .until_durable(&shutdown, || self.engine.ingest(events.clone()))
                    .await;
                if !durable {
                    return;
                }
            }
            if had_lines || !events.is_empty() {
                let held: HashMap<PathBuf, u64> =
                    joins.iter().map(|(p, j)| (p.clone(), j.start)).collect();
                if let Some(t) = &tail {
                    if let Err(e) = t.commit_holding(&held) {
                        tracing::warn!(tag = %self.tag, error = %e, "tail input: saving positions");
                    }
                }
            }
            if had_lines {
                continue;
            }
            let wait = match &self.joining {
                Some(j) if !joins.is_empty() => self.poll.min(j.timeout),
                _ => self.poll,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The events `lines` complete; with joining, lines of an unfinished event stay
    /// in `joins` (per file), and events quiet for the timeout come out.
    fn events_of(&self, lines: Vec<Line>, joins: &mut HashMap<PathBuf, Join>) -> Vec<Event> {
        let Some(joining) = &self.joining else {
            return lines.into_iter().map(|l| self.event(l.text)).collect();
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for line in lines {
            let text = self
                .text_of(&line.text)
                .unwrap_or_else(|| line.text.clone());
            let join = joins.entry(line.path.clone()).or_insert_with(|| Join {
                lines: Multiline::new(joining.start.clone(), joining.timeout, MAX_EVENT),
                first: None,
                start: line.start,
            });
            if let Some(done) = join.lines.push(&text, now) {
                out.push(self.joined(done, join.first.take()));
                join.start = line.start;
            }
            if join.first.is_none() {
                join.first = Some(line.text);
                join.start = line.start;
            }
        }
        joins.retain(|_, join| match join.lines.due(now) {
            Some(done) => {
                out.push(self.joined(done, join.first.take()));
                false
            }
            None => true,
        });
        out
    }

    /// A joined event: for json-file lines, the first line's time and stream with the
    /// joined text as `log`.
    fn joined(&self, text: String, first: Option<String>) -> Event {
        match (self.lines, first) {
            (Lines::JsonFile, Some(first)) => {
                match shoal_logs::task_log::event(&first, &self.tag) {
                    Ok(Event {
                        record: Value::Map(mut fields),
                        time,
                        ..
                    }) => {
                        fields.retain(|(k, _)| k.as_str() != Some("log"));
                        let mut record = vec![(Value::from("log"), Value::from(text.as_str()))];
                        record.extend(fields);
                        self.parsed(&text, record, time)
                    }
                    _ => self.event(first),
                }
            }
            _ => self.event(text),
        }
    }
}

/// One file's event being joined: its first raw line, and where that line starts.
struct Join {
    lines: Multiline,
    first: Option<String>,
    start: u64,
}
