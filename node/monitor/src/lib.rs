//! The container monitor (conmon's and containerd-shim's job), run as `shoal-monitor`
//! in a process of its own so that containers and their logs outlive the agent: it
//! starts the runtime in the foreground, holds the container's stdout and stderr,
//! writes them in Docker's json-file format with size-based rotation, and records the
//! exit code in `exit.json` when the container ends.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

mod pump;
pub use pump::MAX_LINE;

pub const LOG_FILE: &str = "container.log";
pub const EXIT_FILE: &str = "exit.json";
/// Written by the runtime once the container's process has started.
pub const PID_FILE: &str = "container.pid";

#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The bundle directory (config.json), where logs and exit.json go too.
    pub dir: PathBuf,
    pub id: String,
    /// The OCI runtime binary (runc, crun, youki).
    pub runtime: String,
    /// The runtime's state directory (`--root`).
    pub runtime_root: PathBuf,
    pub max_size: u64,
    pub max_files: u32,
}

/// The program the agent starts once per container (installed beside `shoal`).
pub const MONITOR_BIN: &str = "shoal-monitor";

impl MonitorConfig {
    /// The command line the agent starts the monitor with; [`MonitorConfig::from_args`]
    /// reads it back.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut put = |flag: &str, value: &std::ffi::OsStr| {
            args.push(flag.into());
            args.push(value.into());
        };
        put("--dir", self.dir.as_os_str());
        put("--id", self.id.as_ref());
        put("--runtime", self.runtime.as_ref());
        put("--runtime-root", self.runtime_root.as_os_str());
        put("--log-max-size", self.max_size.to_string().as_ref());
        put("--log-max-files", self.max_files.to_string().as_ref());
        args
    }

    /// Reads the command line [`MonitorConfig::to_args`] wrote.
    pub fn from_args(
        args: impl IntoIterator<Item = std::ffi::OsString>,
    ) -> Result<MonitorConfig, String> {
        let mut dir = None;
        let mut id = None;
        let mut runtime = None;
        let mut runtime_root = None;
        let mut max_size = 10 << 20;
        let mut max_files = 3;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag.to_string_lossy().into_owned();
            let value = args
                .next()
                .ok_or_else(|| format!("{flag}: needs a value"))?;
            let text = || {
                value
                    .to_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{flag}: not UTF-8"))
            };
            let number = |t: String| t.parse::<u64>().map_err(|e| format!("{flag} {t:?}: {e}"));
            match flag.as_str() {
                "--dir" => dir = Some(PathBuf::from(&value)),
                "--id" => id = Some(text()?),
                "--runtime" => runtime = Some(text()?),
                "--runtime-root" => runtime_root = Some(PathBuf::from(&value)),
                "--log-max-size" => max_size = number(text()?)?,
                "--log-max-files" => {
                    max_files =
                        u32::try_from(number(text()?)?).map_err(|_| format!("{flag}: too large"))?
                }
                other => return Err(format!("{other}: unknown flag")),
            }
        }
        fn need<T>(v: Option<T>, flag: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("{flag} is required"))
        }
        Ok(MonitorConfig {
            dir: need(dir, "--dir")?,
            id: need(id, "--id")?,
            runtime: need(runtime, "--runtime")?,
            runtime_root: need(runtime_root, "--runtime-root")?,
            max_size,
            max_files,
        })
    }
}

/// What `exit.json` says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    pub exit_code: i32,
    pub finished_at: chrono::DateTime<Utc>,
}

impl Exit {
    pub fn read(dir: &Path) -> Option<Exit> {
        let bytes = fs::read(dir.join(EXIT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// One json-file line, as `docker logs` reads them.
#[derive(Serialize, Deserialize)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// A json-file log with rotation: `container.log`, `.1`, ... up to `max_files` files.
pub struct JsonLog {
    path: PathBuf,
    file: fs::File,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl JsonLog {
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonLog {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
        })
    }

    pub fn write(&mut self, stream: &str, bytes: &[u8]) -> io::Result<()> {
        let line = LogLine {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.into(),
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
        };
        let mut json = serde_json::to_vec(&line).map_err(io::Error::other)?;
        json.push(b'\n');
        if self.max_size > 0 && self.size + json.len() as u64 > self.max_size && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&json)?;
        self.size += json.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files == 1 {
            self.file.set_len(0)?;
        } else {
            let _ = fs::remove_file(name(self.max_files - 1));
            for n in (1..self.max_files - 1).rev() {
                let _ = fs::rename(name(n), name(n + 1));
            }
            fs::rename(&self.path, name(1))?;
            self.file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Runs the container to its end; returns its exit code (128 + signal when killed).
pub fn run_monitor(c: &MonitorConfig) -> io::Result<i32> {
    let mut log = JsonLog::open(&c.dir.join(LOG_FILE), c.max_size, c.max_files)?;
    let mut child = Command::new(&c.runtime)
        .arg("--root")
        .arg(&c.runtime_root)
        .args(["run", "--pid-file"])
        .arg(c.dir.join(PID_FILE))
        .arg("--bundle")
        .arg(&c.dir)
        .arg(&c.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) {
        let (out, err) = (
            fs::File::from(OwnedFd::from(out)),
            fs::File::from(OwnedFd::from(err)),
        );
        pump::pump(out, err, &mut log);
    }
    let status = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    let exit = Exit {
        exit_code: code,
        finished_at: Utc::now(),
    };
    let tmp = c.dir.join(format!("{EXIT_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec(&exit).map_err(io::Error::other)?)?;
    fs::rename(&tmp, c.dir.join(EXIT_FILE))?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_reads_back_as_written() {
        let c = MonitorConfig {
            dir: "/var/lib/shoal/containers/x".into(),
            id: "shoal-x".into(),
            runtime: "/usr/sbin/runc".into(),
            runtime_root: "/run/shoal/runc".into(),
            max_size: 1234,
            max_files: 5,
        };
        let back = MonitorConfig::from_args(c.to_args()).expect("reads back");
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
        let e = MonitorConfig::from_args(["--id".into()]).expect_err("no value");
        assert_eq!(e, "--id: needs a value");
        let e = MonitorConfig::from_args(["--id".into(), "x".into()]).expect_err("no dir");
        assert_eq!(e, "--dir is required");
    }

    #[test]
    fn logs_rotate_and_keep_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LOG_FILE);
        let mut log = JsonLog::open(&path, 200, 3).expect("open");
        for i in 0..40 {
            log.write("stdout", format!("line {i}\n").as_bytes())
                .expect("write");
        }
        let files: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(files.len(), 3, "{files:?}");
        let last = fs::read_to_string(&path).expect("read");
        let line: LogLine =
            serde_json::from_str(last.lines().last().expect("a line")).expect("json");
        assert_eq!(
            (line.log.as_str(), line.stream.as_str()),
            ("line 39\n", "stdout")
        );
        assert!(fs::metadata(&path).expect("meta").len() <= 200);
    }
}
