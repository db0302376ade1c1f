//! Reading a container's json-file log (and its rotated files) back: the last N lines,
//! lines since a time, and following new lines until the container has exited.

use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use shoal_monitor::{Exit, LogLine, LOG_FILE};

/// Which lines to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQuery {
    /// The last this many (None: all).
    pub tail: Option<usize>,
    pub since: Option<DateTime<Utc>>,
}

fn parse(line: &str, since: Option<DateTime<Utc>>) -> Option<LogLine> {
    let l: LogLine = serde_json::from_str(line).ok()?;
    if let Some(since) = since {
        let t = DateTime::parse_from_rfc3339(&l.time).ok()?;
        if t < since {
            return None;
        }
    }
    Some(l)
}

/// The log files, oldest first: `container.log.N` … `.1`, then `container.log`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix(&format!("{LOG_FILE}."))?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(dir.join(LOG_FILE));
    out
}

/// What the log holds now, and where `container.log` ends (inode, offset) for
/// following.
pub fn read(dir: &Path, q: LogQuery) -> (Vec<LogLine>, (u64, u64)) {
    let mut lines = Vec::new();
    let mut end = (0, 0);
    for path in files(dir) {
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        let meta = file.metadata().ok();
        let mut reader = BufReader::new(file);
        let mut buf = String::new();
        let mut offset = 0u64;
        while let Ok(n) = reader.read_line(&mut buf) {
            // A partial last line is being written: leave it for the follower.
            if n == 0 || !buf.ends_with('\n') {
                break;
            }
            offset += n as u64;
            lines.extend(parse(buf.trim_end(), q.since));
            buf.clear();
        }
        if path.ends_with(LOG_FILE) {
            end = (meta.map(|m| m.ino()).unwrap_or(0), offset);
        }
    }
    if let Some(n) = q.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    (lines, end)
}

/// Follows `container.log` from `(inode, offset)`, handing each batch of new lines to
/// `emit`, across rotations, until the container has exited and everything is read, or
/// `emit` returns false.
pub async fn follow<F, Fut>(dir: &Path, from: (u64, u64), mut emit: F)
where
    F: FnMut(Vec<LogLine>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (mut inode, mut offset) = from;
    loop {
        let exited = Exit::read(dir).is_some();
        let path = dir.join(LOG_FILE);
        let current = fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
        let mut lines = Vec::new();
        if current != inode && inode != 0 {
            // Rotated: finish the old file (now `.1`) first.
            let old = dir.join(format!("{LOG_FILE}.1"));
            if fs::metadata(&old).is_ok_and(|m| m.ino() == inode) {
                drain(&old, &mut offset, &mut lines);
            }
            offset = 0;
        }
        inode = current;
        drain(&path, &mut offset, &mut lines);
        if !lines.is_empty() && !emit(lines).await {
            return;
        }
        if exited {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Appends the complete lines of `path` after `offset` to `out`.
fn drain(path: &Path, offset: &mut u64, out: &mut Vec<LogLine>) {
    let Ok(mut file) = fs::File::open(path) else {
        return;
    };
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    while let Ok(n) = reader.read_line(&mut buf) {
        if n == 0 || !buf.ends_with('\n') {
            break;
        }
        *offset += n as u64;
        out.extend(parse(buf.trim_end(), None));
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_monitor::JsonLog;

    #[test]
    fn tail_and_since_span_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = JsonLog::open(&dir.path().join(LOG_FILE), 400, 10).expect("open");
        for i in 0..20 {
            log.write("stdout", format!("line {i}\n").as_bytes())
                .expect("write");
        }
        assert!(files(dir.path()).len() >= 4, "the lines span rotated files");
        let (all, _) = read(dir.path(), LogQuery::default());
        let texts: Vec<String> = all.iter().map(|l| l.log.trim().to_string()).collect();
        assert_eq!(
            texts.first().map(String::as_str),
            Some("line 0"),
            "{texts:?}"
        );
        assert_eq!(texts.len(), 20);
        let (last, _) = read(
            dir.path(),
            LogQuery {
                tail: Some(3),
                since: None,
            },
        );
        let texts: Vec<&str> = last.iter().map(|l| l.log.trim()).collect();
        assert_eq!(texts, ["line 17", "line 18", "line 19"]);
        let (none, _) = read(
            dir.path(),
            LogQuery {
                tail: None,
                since: Some(Utc::now() + chrono::Duration::seconds(5)),
            },
        );
        assert!(none.is_empty());
    }
}
