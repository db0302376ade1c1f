//! An output's file buffer: events kept on disk in chunks until the output has
//! delivered them, so that nothing acknowledged is lost to a crash.
//!
//! A chunk is a file of records, each `[length u32 LE][crc32 u32 LE][event]` with the
//! event as MessagePack `[tag, time, record]`. Events are appended to the open chunk
//! (`<seq>.open`); [`FileBuffer::sync`] makes everything appended so far durable
//! (fsync), and only then may an input acknowledge it (forward's `ack`, a tail
//! position). A chunk is sealed (`<seq>.ready`) when it reaches its size or age;
//! the output takes the oldest ready chunk, and [`FileBuffer::delivered`] removes it.
//!
//! After a crash, an open chunk is sealed as far as its records are whole: a record
//! cut short at the end (the crash came mid-write, before any sync acknowledged it)
//! is dropped. A record whose checksum fails in the middle of a chunk means the disk
//! changed under it: the chunk is moved to `quarantine/` and reported, never refused
//! at start (Fluent Bit refuses to start on a corrupt chunk) and never silently
//! dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rmpv::Value;
use thiserror::Error;

use crate::event::{Event, EventTime};

#[derive(Debug, Error)]
pub enum BufferError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the buffer holds {held} bytes, its limit is {limit}")]
    Full { held: u64, limit: u64 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sizes and ages that shape chunks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A chunk is sealed once it holds this many bytes.
    pub chunk_bytes: u64,
    /// ... or once its first event is this old.
    pub chunk_age: Duration,
    /// All chunks together, at most.
    pub total_bytes: u64,
}

/// What opening a buffer found on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Chunks ready to send again.
    pub chunks: usize,
    /// Records cut short by a crash before they were synced (dropped).
    pub torn_records: usize,
    /// Chunks moved to `quarantine/` because a record's checksum failed.
    pub quarantined: Vec<PathBuf>,
}

struct Open {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes appended, written to `file` or still in `pending`.
    bytes: u64,
    since: Instant,
    dirty: bool,
    /// Records appended and not yet written: written in large writes, and always
    /// before a sync (nothing unsynced was acknowledged, so a crash loses nothing
    /// that was).
    pending: Vec<u8>,
}

/// Appended records are written to the chunk file once this many bytes gathered.
const WRITE_BATCH: usize = 256 << 10;

pub struct FileBuffer {
    dir: PathBuf,
    limits: Limits,
    /// Sealed chunks, oldest first: (seq, bytes).
    ready: std::collections::VecDeque<(u64, u64)>,
    open: Option<Open>,
    next_seq: u64,
}

/// A sealed chunk's events, as read back for delivery.
#[derive(Debug)]
pub struct Chunk {
    pub seq: u64,
    pub events: Vec<Event>,
}

impl FileBuffer {
    /// Opens (or creates) the buffer in `dir`, recovering what a crash left.
    pub fn open(dir: &Path, limits: Limits) -> Result<(FileBuffer, Recovered), BufferError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let path = entry.path();
            let seq = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok());
            let ext = path.extension().and_then(|e| e.to_str());
            if let (Some(seq), Some("open" | "ready")) = (seq, ext) {
                found.push((seq, path));
            }
        }
        found.sort();
        let mut buffer = FileBuffer {
            dir: dir.to_path_buf(),
            limits,
            ready: Default::default(),
            open: None,
            next_seq: found.last().map_or(0, |(s, _)| s + 1),
        };
        let mut recovered = Recovered::default();
        for (seq, path) in found {
            let bytes = fs::read(&path).map_err(io(&path))?;
            match scan(&bytes) {
                Scan::Whole => {}
                Scan::Torn { keep } => {
                    recovered.torn_records += 1;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io(&path))?;
                    f.set_len(keep as u64).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                }
                Scan::Corrupt => {
                    let q = dir.join("quarantine");
                    fs::create_dir_all(&q).map_err(io(&q))?;
                    let to = q.join(path.file_name().unwrap_or_default());
                    fs::rename(&path, &to).map_err(io(&path))?;
                    recovered.quarantined.push(to);
                    continue;
                }
            }
            let ready = buffer.ready_path(seq);
            if path != ready {
                fs::rename(&path, &ready).map_err(io(&path))?;
            }
            let len = fs::metadata(&ready).map_err(io(&ready))?.len();
            if len == 0 {
                let _ = fs::remove_file(&ready);
                continue;
            }
            buffer.ready.push_back((seq, len));
            recovered.chunks += 1;
        }
        Ok((buffer, recovered))
    }

    fn open_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.open"))
    }

    fn ready_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.ready"))
    }

    /// Bytes held in all chunks.
    pub fn held(&self) -> u64 {
        self.ready.iter().map(|(_, b)| b).sum::<u64>() + self.open.as_ref().map_or(0, |o| o.bytes)
    }

    /// How long the oldest event held has waited: since its chunk was begun.
    pub fn oldest_age(&self) -> Option<Duration> {
        if let Some((seq, _)) = self.ready.front() {
            let meta = fs::metadata(self.ready_path(*seq)).ok()?;
            let begun = meta.created().or_else(|_| meta.modified()).ok()?;
            return Some(SystemTime::now().duration_since(begun).unwrap_or_default());
        }
        self.open
            .as_ref()
            .filter(|o| o.bytes > 0)
            .map(|o| o.since.elapsed())
    }

    /// Sealed chunks waiting for the output.
    pub fn ready_chunks(&self) -> usize {
        self.ready.len()
    }

    /// Appends `event` to the open chunk (not yet durable: see [`FileBuffer::sync`]).
    /// Full when the buffer is at its limit: the caller blocks its input or drops
    /// the oldest chunk, as its overflow policy says.
    pub fn append(&mut self, event: &Event) -> Result<(), BufferError> {
        self.append_body(&body(event))
    }

    /// As [`FileBuffer::append`], for an event already encoded by [`body`] or
    /// [`message_body`].
    pub fn append_body(&mut self, body: &[u8]) -> Result<(), BufferError> {
        let size = body.len() as u64 + 8;
        let held = self.held();
        if held + size > self.limits.total_bytes {
            return Err(BufferError::Full {
                held,
                limit: self.limits.total_bytes,
            });
        }
        if self.open.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.open_path(seq);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            self.open = Some(Open {
                seq,
                path,
                file,
                bytes: 0,
                since: Instant::now(),
                dirty: false,
                pending: Vec::with_capacity(WRITE_BATCH),
            });
        }
        if let Some(open) = self.open.as_mut() {
            // One record: length and checksum (little-endian u32s), then the body.
            open.pending
                .extend_from_slice(&(body.len() as u32).to_le_bytes());
            open.pending
                .extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            open.pending.extend_from_slice(body);
            open.bytes += size;
            open.dirty = true;
            if open.pending.len() >= WRITE_BATCH {
                open.file.write_all(&open.pending).map_err(io(&open.path))?;
                open.pending.clear();
            }
        }
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.bytes >= self.limits.chunk_bytes)
        {
            self.seal()?;
        }
        Ok(())
    }

    /// Makes every appended event durable; only then may inputs acknowledge them.
    pub fn sync(&mut self) -> Result<(), BufferError> {
        if let Some(open) = self.open.as_mut().filter(|o| o.dirty) {
            open.file.write_all(&open.pending).map_err(io(&open.path))?;
            open.pending.clear();
            open.file.sync_data().map_err(io(&open.path))?;
            open.dirty = false;
        }
        Ok(())
    }

    /// Seals the open chunk if it is older than the chunk age; call it on a timer.
    pub fn tick(&mut self) -> Result<(), BufferError> {
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.since.elapsed() >= self.limits.chunk_age)
        {
            self.seal()?;
        }
        Ok(())
    }

    /// Seals the open chunk now (durable first), so the output can take it.
    pub fn seal(&mut self) -> Result<(), BufferError> {
        self.sync()?;
        if let Some(open) = self.open.take() {
            let (from, to) = (self.open_path(open.seq), self.ready_path(open.seq));
            fs::rename(&from, &to).map_err(io(&from))?;
            self.ready.push_back((open.seq, open.bytes));
        }
        Ok(())
    }

    /// The oldest sealed chunk as it is on disk (see [`bodies`]), for an output that
    /// sends records without decoding them; it stays until [`FileBuffer::delivered`].
    pub fn oldest_raw(&self) -> Result<Option<(u64, Vec<u8>)>, BufferError> {
        let Some(&(seq, _)) = self.ready.front() else {
            return Ok(None);
        };
        let path = self.ready_path(seq);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(&path))?;
        Ok(Some((seq, bytes)))
    }

    /// The oldest sealed chunk, read back; it stays until [`FileBuffer::delivered`].
    pub fn oldest(&self) -> Result<Option<Chunk>, BufferError> {
        Ok(self.oldest_raw()?.map(|(seq, bytes)| Chunk {
            seq,
            events: events(&bytes),
        }))
    }

    /// The output has delivered chunk `seq`: it goes.
    pub fn delivered(&mut self, seq: u64) -> Result<(), BufferError> {
        if let Some(i) = self.ready.iter().position(|(s, _)| *s == seq) {
            self.ready.remove(i);
            let path = self.ready_path(seq);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Moves chunk `seq` out of the buffer to `to` (a dead-letter directory) when the
    /// output gave up on it; the path it now has.
    pub fn set_aside(&mut self, seq: u64, to: &Path) -> Result<PathBuf, BufferError> {
        fs::create_dir_all(to).map_err(io(to))?;
        let from = self.ready_path(seq);
        let dest = to.join(format!("{seq:020}.chunk"));
        fs::rename(&from, &dest).map_err(io(&from))?;
        self.ready.retain(|(s, _)| *s != seq);
        Ok(dest)
    }

    /// Drops the oldest sealed chunk (overflow `drop_oldest`); how many events it held.
    pub fn drop_oldest(&mut self) -> Result<usize, BufferError> {
        let Some(chunk) = self.oldest()? else {
            return Ok(0);
        };
        self.delivered(chunk.seq)?;
        Ok(chunk.events.len())
    }
}

/// An event as a buffer record holds it: MessagePack `[tag, time, record]`, written
/// straight from the event (no copy of its record).
pub fn body(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + event.tag.len());
    out.push(0x93);
    let _ = rmp::encode::write_str(&mut out, &event.tag);
    event.time.write(&mut out);
    let _ = rmpv::encode::write_value(&mut out, &event.record);
    out
}

/// The body of an event whose record is `{"message": line}` (a line read with no
/// parser), written from the line without building the event.
pub fn message_body(tag: &str, time: EventTime, line: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + tag.len() + line.len());
    out.push(0x93);
    let _ = rmp::encode::write_str(&mut out, tag);
    time.write(&mut out);
    out.push(0x81);
    let _ = rmp::encode::write_str(&mut out, "message");
    let _ = rmp::encode::write_str(&mut out, line);
    out
}

enum Scan {
    Whole,
    /// The last record is cut short; keep the first `keep` bytes.
    Torn {
        keep: usize,
    },
    Corrupt,
}

/// The records of a chunk: (start, body) of each whole one, and how the chunk ends.
fn records(bytes: &[u8]) -> (Vec<&[u8]>, Scan) {
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return (out, Scan::Torn { keep: at });
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        // We never write an empty record: zeros are a tail the crash left unwritten.
        let Some(body) = bytes.get(at + 8..at + 8 + len).filter(|_| len > 0) else {
            return (out, Scan::Torn { keep: at });
        };
        if crc32fast::hash(body) != crc {
            // The last record was the write in flight (never synced, never
            // acknowledged); one with more after it was changed on disk.
            let last = at + 8 + len == bytes.len();
            return (
                out,
                if last {
                    Scan::Torn { keep: at }
                } else {
                    Scan::Corrupt
                },
            );
        }
        out.push(body);
        at += 8 + len;
    }
    (out, Scan::Whole)
}

fn scan(bytes: &[u8]) -> Scan {
    records(bytes).1
}

/// The whole records of a chunk's bytes, each the MessagePack `[tag, time, record]`.
pub fn bodies(bytes: &[u8]) -> Vec<&[u8]> {
    records(bytes).0
}

fn events(bytes: &[u8]) -> Vec<Event> {
    records(bytes)
        .0
        .into_iter()
        .filter_map(|body| {
            let Value::Array(mut parts) = rmpv::decode::read_value(&mut &body[..]).ok()? else {
                return None;
            };
            let record = parts.pop()?;
            let time = EventTime::from_value(&parts.pop()?)?;
            let tag = parts.pop()?.as_str()?.to_string();
            Some(Event { tag, time, record })
        })
        .collect()
}
