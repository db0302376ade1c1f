//! Lines joined into events: a line matching the start pattern begins an event, the
//! lines after it that do not are part of it (a stack trace under its first line).
//! An event ends at the next start, or when no line came for the flush timeout (the
//! caller's timer asks [`Multiline::due`]). Lines before the first start make an
//! event of their own, ended the same way, so nothing is held forever or dropped.

use std::time::{Duration, Instant};

use regex::Regex;

pub struct Multiline {
    start: Regex,
    timeout: Duration,
    /// An event longer than this ends there (the next line starts another).
    max_bytes: usize,
    pending: Option<(String, Instant)>,
}

impl Multiline {
    pub fn new(start: Regex, timeout: Duration, max_bytes: usize) -> Multiline {
        Multiline {
            start,
            timeout,
            max_bytes,
            pending: None,
        }
    }

    /// Takes one line; the event it completed, if it completed one.
    pub fn push(&mut self, line: &str, now: Instant) -> Option<String> {
        let starts = self.start.is_match(line);
        match self.pending.as_mut() {
            Some((event, last)) if !starts && event.len() + 1 + line.len() <= self.max_bytes => {
                event.push('\n');
                event.push_str(line);
                *last = now;
                None
            }
            _ => self
                .pending
                .replace((line.to_string(), now))
                .map(|(event, _)| event),
        }
    }

    /// The event held, if no line came for the timeout.
    pub fn due(&mut self, now: Instant) -> Option<String> {
        let quiet = self
            .pending
            .as_ref()
            .is_some_and(|(_, last)| now.duration_since(*last) >= self.timeout);
        if quiet {
            self.flush()
        } else {
            None
        }
    }

    /// The event held, now (the input is closing).
    pub fn flush(&mut self) -> Option<String> {
        self.pending.take().map(|(event, _)| event)
    }
}
