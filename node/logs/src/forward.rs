//! The Fluentd forward protocol v1, as its specification has it: what a client sends
//! (Message, Forward, PackedForward, CompressedPackedForward) turned into events, and
//! the `ack` a server owes a client that asked for one with a `chunk` option.
//!
//! A connection's bytes go through [`crate::frame::value_len`] first, so what is
//! decoded here is always one whole MessagePack value no longer than the limit.
//! Compressed entries are inflated up to the same limit: a small gzip member cannot
//! make the server hold gigabytes.

use std::io::Read;

use rmpv::Value;
use thiserror::Error;

use crate::event::{Event, EventTime};
use crate::frame::{value_len, FrameError};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("not MessagePack: {0}")]
    Frame(#[from] FrameError),
    #[error("not MessagePack: {0}")]
    Decode(String),
    #[error("a message is an array [tag, ...], not {0}")]
    NotAnArray(&'static str),
    #[error("the tag must be a non-empty string")]
    BadTag,
    #[error("entry {0}: {1}")]
    Entry(usize, String),
    #[error("option {0}: {1}")]
    Option(&'static str, String),
    #[error("compressed entries inflate to more than {0} bytes")]
    TooLarge(usize),
    #[error("a message of {0} values is none of Message, Forward or PackedForward")]
    Shape(usize),
}

/// One message's events and what the client asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub events: Vec<Event>,
    /// The `chunk` option: acknowledge with [`ack`] once the events are durable.
    pub chunk: Option<String>,
}

/// Decodes the message at the start of `buf`: the message and how many bytes it took,
/// or None while it has not all arrived. `limit` bounds a message and what its
/// compressed entries inflate to.
pub fn decode(buf: &[u8], limit: usize) -> Result<Option<(Message, usize)>, ForwardError> {
    let Some(len) = value_len(buf, limit)? else {
        return Ok(None);
    };
    let value = read_one(&buf[..len])?;
    Ok(Some((message(value, limit)?, len)))
}

fn read_one(mut bytes: &[u8]) -> Result<Value, ForwardError> {
    rmpv::decode::read_value(&mut bytes).map_err(|e| ForwardError::Decode(e.to_string()))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension",
    }
}

fn message(value: Value, limit: usize) -> Result<Message, ForwardError> {
    let Value::Array(mut parts) = value else {
        return Err(ForwardError::NotAnArray(kind_of(&value)));
    };
    if parts.is_empty() {
        return Err(ForwardError::Shape(0));
    }
    let tag = match parts.remove(0) {
        Value::String(s) => s.into_str().filter(|s| !s.is_empty()),
        _ => None,
    }
    .ok_or(ForwardError::BadTag)?;
    // [tag, time, record] or [tag, time, record, option]: Message.
    // [tag, entries] or [tag, entries, option]: Forward (an array) or PackedForward
    // (bytes of entries back to back).
    let (events, option) = match parts.len() {
        2 | 3
            if !matches!(
                parts[0],
                Value::Array(_) | Value::Binary(_) | Value::String(_)
            ) =>
        {
            let option = (parts.len() == 3).then(|| parts.pop()).flatten();
            let record = parts.pop().unwrap_or(Value::Nil);
            let time = parts.pop().unwrap_or(Value::Nil);
            (vec![event(&tag, 0, time, record)?], option)
        }
        1 | 2 => {
            let option = (parts.len() == 2).then(|| parts.pop()).flatten();
            let compressed = compression(option.as_ref())?;
            let entries = match parts.pop().unwrap_or(Value::Nil) {
                Value::Array(entries) => entries,
                Value::Binary(bytes) => packed(&bytes, compressed, limit)?,
                Value::String(s) => packed(s.as_bytes(), compressed, limit)?,
                other => return Err(ForwardError::NotAnArray(kind_of(&other))),
            };
            let events = entries
                .into_iter()
                .enumerate()
                .map(|(i, entry)| match entry {
                    Value::Array(mut pair) if pair.len() == 2 => {
                        let record = pair.pop().unwrap_or(Value::Nil);
                        let time = pair.pop().unwrap_or(Value::Nil);
                        event(&tag, i, time, record)
                    }
                    other => Err(ForwardError::Entry(
                        i,
                        format!("an entry is [time, record], not {}", kind_of(&other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (events, option)
        }
        n => return Err(ForwardError::Shape(n + 1)),
    };
    Ok(Message {
        events,
        chunk: chunk(option.as_ref())?,
    })
}

fn event(tag: &str, i: usize, time: Value, record: Value) -> Result<Event, ForwardError> {
    let time = EventTime::from_value(&time).ok_or_else(|| {
        ForwardError::Entry(
            i,
            format!(
                "the time must be an EventTime or whole seconds, not {}",
                kind_of(&time)
            ),
        )
    })?;
    if !matches!(record, Value::Map(_)) {
        return Err(ForwardError::Entry(
            i,
            format!("the record must be a map, not {}", kind_of(&record)),
        ));
    }
    Ok(Event {
        tag: tag.to_string(),
        time,
        record,
    })
}

/// A map's value for `key`, a string key.
fn option_value<'a>(option: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    match option? {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn compression(option: Option<&Value>) -> Result<bool, ForwardError> {
    match option_value(option, "compressed") {
        None => Ok(false),
        Some(v) if v.as_str() == Some("gzip") => Ok(true),
        Some(v) if v.as_str() == Some("text") => Ok(false),
        Some(v) => Err(ForwardError::Option(
            "compressed",
            format!("{v} is not gzip (the only compression the protocol has)"),
        )),
    }
}

fn chunk(option: Option<&Value>) -> Result<Option<String>, ForwardError> {
    match option_value(option, "chunk") {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| ForwardError::Option("chunk", "must be a non-empty string".into())),
    }
}

/// The entries of a PackedForward: [time, record] values back to back, inflated
/// first when gzip (one or more members, as Fluent Bit sends them).
fn packed(bytes: &[u8], gzip: bool, limit: usize) -> Result<Vec<Value>, ForwardError> {
    let inflated;
    let mut rest = if gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| ForwardError::Decode(format!("gzip: {e}")))?;
        if out.len() > limit {
            return Err(ForwardError::TooLarge(limit));
        }
        inflated = out;
        &inflated[..]
    } else {
        bytes
    };
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let len = value_len(rest, limit)?.ok_or_else(|| {
            ForwardError::Entry(entries.len(), "cut short inside the packed entries".into())
        })?;
        entries.push(read_one(&rest[..len])?);
        rest = &rest[len..];
    }
    Ok(entries)
}

/// What a server answers a message that had a `chunk` option: `{"ack": chunk}`.
pub fn ack(chunk: &str) -> Vec<u8> {
    encode(&Value::Map(vec![(Value::from("ack"), Value::from(chunk))]))
}

/// How a message is sent: each mode a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Message,
    Forward,
    PackedForward,
    CompressedPackedForward,
}

/// Encodes `events` (all with `tag`) as a client would in `mode`; Message mode takes
/// one event per message, so it returns one message per event back to back.
pub fn encode_events(tag: &str, events: &[Event], mode: Mode, chunk: Option<&str>) -> Vec<u8> {
    let mut option = Vec::new();
    if let Some(c) = chunk {
        option.push((Value::from("chunk"), Value::from(c)));
    }
    let entry = |e: &Event| Value::Array(vec![e.time.to_value(), e.record.clone()]);
    let packed = || {
        let mut bytes = Vec::new();
        for e in events {
            bytes.extend(encode(&entry(e)));
        }
        bytes
    };
    let with_option = |mut parts: Vec<Value>, option: &Vec<(Value, Value)>| {
        if !option.is_empty() {
            parts.push(Value::Map(option.clone()));
        }
        encode(&Value::Array(parts))
    };
    match mode {
        Mode::Message => events
            .iter()
            .flat_map(|e| {
                with_option(
                    vec![Value::from(tag), e.time.to_value(), e.record.clone()],
                    &option,
                )
            })
            .collect(),
        Mode::Forward => with_option(
            vec![
                Value::from(tag),
                Value::Array(events.iter().map(entry).collect()),
            ],
            &option,
        ),
        Mode::PackedForward => packed_forward(tag, events, chunk),
        Mode::CompressedPackedForward => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = gz.write_all(&packed());
            let bytes = gz.finish().unwrap_or_default();
            option.push((Value::from("compressed"), Value::from("gzip")));
            with_option(vec![Value::from(tag), Value::Binary(bytes)], &option)
        }
    }
}

/// PackedForward written straight from the events: `[tag, bin(entries), option]`,
/// each entry `[time, record]`, with no copy of a record and the entries written in
/// place (as bin 32, its length filled in after).
fn packed_forward(tag: &str, events: &[Event], chunk: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + events.len() * 128);
    out.push(if chunk.is_some() { 0x93 } else { 0x92 });
    let _ = rmp::encode::write_str(&mut out, tag);
    out.push(0xc6);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    for e in events {
        out.push(0x92);
        e.time.write(&mut out);
        let _ = rmpv::encode::write_value(&mut out, &e.record);
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    if let Some(c) = chunk {
        out.push(0x81);
        let _ = rmp::encode::write_str(&mut out, "chunk");
        let _ = rmp::encode::write_str(&mut out, c);
    }
    out
}

/// PackedForward messages from buffer records (`[tag, time, record]` each, as
/// [`crate::buffer::bodies`] gives them) without decoding them: one message per run
/// of one tag, each entry the record's bytes after its tag. `chunk_id` names each
/// message for its ack; returns (chunk id, message, records in it). A record that
/// does not start as a buffer record does is skipped (the buffer's checksums stand
/// behind what it returns).
pub fn packed_from_records(
    records: &[&[u8]],
    mut chunk_id: impl FnMut() -> String,
) -> Vec<(String, Vec<u8>, usize)> {
    let split = |body: &[u8]| -> Option<(Vec<u8>, usize)> {
        if body.first() != Some(&0x93) {
            return None;
        }
        let mut rest = &body[1..];
        let len = rmp::decode::read_str_len(&mut rest).ok()? as usize;
        let tag = rest.get(..len)?.to_vec();
        Some((tag, body.len() - rest.len() + len))
    };
    let mut out: Vec<(String, Vec<u8>, usize)> = Vec::new();
    let mut current: Option<(Vec<u8>, Vec<u8>, usize)> = None;
    let finish = |run: (Vec<u8>, Vec<u8>, usize), id: String| {
        let (tag, entries, n) = run;
        let mut m = Vec::with_capacity(entries.len() + tag.len() + 64);
        m.push(0x93);
        let _ = rmp::encode::write_str_len(&mut m, tag.len() as u32);
        m.extend_from_slice(&tag);
        let _ = rmp::encode::write_bin_len(&mut m, entries.len() as u32);
        m.extend_from_slice(&entries);
        m.push(0x81);
        let _ = rmp::encode::write_str(&mut m, "chunk");
        let _ = rmp::encode::write_str(&mut m, &id);
        (id, m, n)
    };
    for body in records {
        let Some((tag, at)) = split(body) else {
            continue;
        };
        if current.as_ref().is_some_and(|(t, _, _)| *t != tag) {
            if let Some(run) = current.take() {
                out.push(finish(run, chunk_id()));
            }
        }
        let run = current.get_or_insert_with(|| (tag, Vec::new(), 0));
        run.1.push(0x92);
        run.1.extend_from_slice(&body[at..]);
        run.2 += 1;
    }
    if let Some(run) = current.take() {
        out.push(finish(run, chunk_id()));
    }
    out
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}
