//! Following files as they grow, as Fluentd's `in_tail`, without losing or repeating
//! a line across rotations and restarts.
//!
//! A file is followed by its inode, not its name. Rotation by rename: the name now
//! holds another inode, so the old one (still open) is read to its end, its last
//! line too, and the new one from its start. Rotation by copytruncate: the inode is
//! the same but shorter than what was read, so it is read again from its start. A
//! line is returned only once its newline has arrived; a line longer than the limit
//! comes out in pieces rather than being dropped.
//!
//! Positions (inode, offset, name) are kept in a file, written whole and renamed
//! into place, and only when the caller says ([`Tail::commit`]), after what it was
//! given is durable in a buffer: a crash before that reads those lines again
//! (at-least-once), never skips them. A file rotated while nobody was following it
//! is found again by its inode in its directory, and its unread end is read first.
//!
//! Names are matched by a glob in their last component (`/var/log/app/*.log`); the
//! directory is fixed. A glob that also matches rotated names (`*.log*`) would read
//! copies made by copytruncate again: give rotated files names it does not match.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TailError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the directory cannot hold wildcards, only the file name")]
    Glob(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TailError + '_ {
    move |source| TailError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One line, with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub path: PathBuf,
    pub text: String,
    /// Where the line starts in its file: a reader that holds lines back (a
    /// multiline event not yet complete) commits positions no further than this.
    pub start: u64,
}

/// A file being followed.
struct Followed {
    path: PathBuf,
    ino: u64,
    file: File,
    /// Bytes read from the file so far.
    read: u64,
    /// Read but not yet a whole line.
    partial: Vec<u8>,
}

impl Followed {
    /// Where the next unreturned line starts: what a restart resumes from.
    fn position(&self) -> u64 {
        self.read - self.partial.len() as u64
    }
}

pub struct Tail {
    dir: PathBuf,
    pattern: String,
    positions: PathBuf,
    max_line: usize,
    files: Vec<Followed>,
    /// Positions read at start for files not yet seen again: inode → (offset, name).
    saved: HashMap<u64, (u64, PathBuf)>,
}

/// Bytes read from one file per poll, at most: no file starves the others.
const READ_PER_POLL: u64 = 1 << 20;

impl Tail {
    /// Follows the files `glob` names, resuming from the positions kept in
    /// `positions` (a file this creates).
    pub fn open(glob: &str, positions: &Path, max_line: usize) -> Result<Tail, TailError> {
        let path = Path::new(glob);
        let (dir, pattern) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(d), Some(p)) if !d.to_string_lossy().contains(['*', '?']) => (d, p),
            _ => return Err(TailError::Glob(glob.to_string())),
        };
        let mut saved = HashMap::new();
        match fs::read_to_string(positions) {
            Ok(text) => {
                for line in text.lines() {
                    let mut parts = line.splitn(3, '\t');
                    let (Some(ino), Some(off), Some(name)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    if let (Ok(ino), Ok(off)) = (ino.parse(), off.parse()) {
                        saved.insert(ino, (off, PathBuf::from(name)));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(positions)(e)),
        }
        Ok(Tail {
            dir: dir.to_path_buf(),
            pattern: pattern.to_string(),
            positions: positions.to_path_buf(),
            max_line: max_line.max(1),
            files: Vec::new(),
            saved,
        })
    }

    /// Every whole line that has arrived since the last poll.
    pub fn poll(&mut self) -> Result<Vec<Line>, TailError> {
        let mut lines = Vec::new();
        let names = self.names()?;
        // Files rotated while nobody followed them: their unread end first.
        // (One still under a name the glob matches is resumed below like any other.)
        let moved: Vec<u64> = self
            .saved
            .keys()
            .filter(|ino| !names.values().any(|i| i == *ino))
            .copied()
            .collect();
        for ino in moved {
            if let Some((off, name)) = self.saved.remove(&ino) {
                if let Some(path) = self.find_inode(ino)? {
                    let file = File::open(&path).map_err(io(&path))?;
                    let mut f = self.follow(name, ino, file, off);
                    drain(&mut f, self.max_line, &mut lines, true)?;
                }
            }
        }
        // Renamed to a name the glob still takes (`app.log` → `app.log.1` under
        // `app.log*`): the same file, followed on under its new name. Rotated out of
        // the glob, or removed: read the old inode to its end and let it go.
        let mut kept = Vec::new();
        for mut f in std::mem::take(&mut self.files) {
            if names.get(&f.path) == Some(&f.ino) {
                kept.push(f);
            } else if let Some((path, _)) = names.iter().find(|(_, ino)| **ino == f.ino) {
                f.path = path.clone();
                kept.push(f);
            } else {
                drain(&mut f, self.max_line, &mut lines, true)?;
            }
        }
        self.files = kept;
        for (path, ino) in names {
            if self.files.iter().any(|f| f.ino == ino) {
                continue;
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            let from = match self.saved.remove(&ino) {
                Some((off, _)) => off,
                None => 0,
            };
            let f = self.follow(path, ino, file, from);
            self.files.push(f);
        }
        for f in &mut self.files {
            let len = f.file.metadata().map_err(io(&f.path))?.len();
            if len < f.read {
                // Truncated in place (copytruncate): what it holds now is new.
                f.read = 0;
                f.partial.clear();
                f.file.seek(SeekFrom::Start(0)).map_err(io(&f.path))?;
            }
            read_lines(f, self.max_line, READ_PER_POLL, &mut lines)?;
        }
        Ok(lines)
    }

    fn follow(&self, path: PathBuf, ino: u64, mut file: File, from: u64) -> Followed {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let from = if from > len { 0 } else { from };
        let from = file.seek(SeekFrom::Start(from)).unwrap_or(0);
        Followed {
            path,
            ino,
            file,
            read: from,
            partial: Vec::new(),
        }
    }

    /// The names the glob matches now, with their inodes.
    fn names(&self) -> Result<HashMap<PathBuf, u64>, TailError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        Ok(entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| crate::glob::matches(&self.pattern, n))
            })
            .filter_map(|e| {
                let meta = fs::metadata(e.path()).ok()?;
                meta.is_file().then(|| (e.path(), meta.ino()))
            })
            .collect())
    }

    /// A file in the followed directory with inode `ino`, whatever its name now.
    fn find_inode(&self, ino: u64) -> Result<Option<PathBuf>, TailError> {
        let entries = fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        Ok(entries
            .flatten()
            .map(|e| e.path())
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.ino() == ino)))
    }

    /// Keeps the positions of everything returned so far: call once it is durable.
    pub fn commit(&self) -> Result<(), TailError> {
        self.commit_holding(&HashMap::new())
    }

    /// As [`Tail::commit`], except that a file in `held` is kept at that offset (the
    /// start of lines the caller still holds): a restart reads them again.
    pub fn commit_holding(&self, held: &HashMap<PathBuf, u64>) -> Result<(), TailError> {
        let mut text = String::new();
        for f in &self.files {
            let at = held
                .get(&f.path)
                .map_or(f.position(), |h| (*h).min(f.position()));
            text.push_str(&format!("{}\t{}\t{}\n", f.ino, at, f.path.display()));
        }
        for (ino, (off, name)) in &self.saved {
            text.push_str(&format!("{ino}\t{off}\t{}\n", name.display()));
        }
        let tmp = self.positions.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &self.positions).map_err(io(&self.positions))?;
        Ok(())
    }
}

/// Reads what `f` has (up to `budget` bytes) and returns its whole lines.
fn read_lines(
    f: &mut Followed,
    max_line: usize,
    budget: u64,
    out: &mut Vec<Line>,
) -> Result<usize, TailError> {
    let mut bytes = Vec::new();
    let n = (&mut f.file)
        .take(budget)
        .read_to_end(&mut bytes)
        .map_err(io(&f.path))?;
    f.read += n as u64;
    f.partial.extend_from_slice(&bytes);
    let mut start = 0;
    while let Some(nl) = f.partial[start..].iter().position(|b| *b == b'\n') {
        let at = f.position() + start as u64;
        push(out, &f.path, &f.partial[start..start + nl], at, max_line);
        start += nl + 1;
    }
    f.partial.drain(..start);
    // A line that outgrows the limit comes out in pieces, so it cannot grow forever.
    while f.partial.len() >= max_line {
        let at = f.position();
        let piece: Vec<u8> = f.partial.drain(..max_line).collect();
        push(out, &f.path, &piece, at, max_line);
    }
    Ok(n)
}

/// Reads `f` to its end; `last`: its final line needs no newline (the writer moved
/// on to another file).
fn drain(
    f: &mut Followed,
    max_line: usize,
    out: &mut Vec<Line>,
    last: bool,
) -> Result<(), TailError> {
    while read_lines(f, max_line, READ_PER_POLL, out)? > 0 {}
    if last && !f.partial.is_empty() {
        let at = f.position();
        let rest = std::mem::take(&mut f.partial);
        push(out, &f.path, &rest, at, max_line);
    }
    Ok(())
}

fn push(out: &mut Vec<Line>, path: &Path, bytes: &[u8], start: u64, max_line: usize) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    for (i, piece) in bytes.chunks(max_line).enumerate() {
        out.push(Line {
            path: path.to_path_buf(),
            text: String::from_utf8_lossy(piece).into_owned(),
            start: start + (i * max_line) as u64,
        });
    }
}
