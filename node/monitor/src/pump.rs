//! Copies a container's stdout and stderr into its log on the monitor's one thread:
//! `poll` on both pipes rather than a thread per pipe, because a monitor runs per
//! container and a second thread costs it a stack and a malloc arena.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::JsonLog;

/// The longest entry a log line becomes; longer output is split, as Docker splits at
/// 16 KiB, so a container printing without newlines cannot grow the monitor.
pub const MAX_LINE: usize = 16 << 10;

/// One pipe: its name in the log and what it has sent since its last newline.
struct Pipe {
    file: File,
    stream: &'static str,
    pending: Vec<u8>,
    open: bool,
}

/// Copies both pipes line by line until both are closed. A write error (a full disk)
/// loses the line, never stops the container.
pub fn pump(stdout: File, stderr: File, log: &mut JsonLog) {
    let mut pipes = [Pipe::new(stdout, "stdout"), Pipe::new(stderr, "stderr")];
    let mut chunk = [0u8; 4096];
    while pipes.iter().any(|p| p.open) {
        let ready = {
            let mut fds: Vec<PollFd<'_>> = pipes
                .iter()
                .filter(|p| p.open)
                .map(|p| PollFd::new(p.file.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.any().unwrap_or(true))
                    .collect::<Vec<_>>(),
                Err(nix::errno::Errno::EINTR) => continue,
                // Poll itself failing leaves nothing to wait on: read each in turn.
                Err(_) => vec![true; fds.len()],
            }
        };
        let open: Vec<&mut Pipe> = pipes.iter_mut().filter(|p| p.open).collect();
        for (pipe, ready) in open.into_iter().zip(ready) {
            if ready {
                pipe.read_some(&mut chunk, log);
            }
        }
    }
}

impl Pipe {
    fn new(file: File, stream: &'static str) -> Self {
        Pipe {
            file,
            stream,
            pending: Vec::new(),
            open: true,
        }
    }

    fn read_some(&mut self, chunk: &mut [u8], log: &mut JsonLog) {
        match self.file.read(chunk) {
            Ok(0) => self.close(log),
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                write_lines(&mut self.pending, self.stream, log);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.close(log),
        }
    }

    /// The pipe ended: what it sent after its last newline is a line of its own.
    fn close(&mut self, log: &mut JsonLog) {
        if !self.pending.is_empty() {
            let _ = log.write(self.stream, &self.pending);
            self.pending = Vec::new();
        }
        self.open = false;
    }
}

/// Writes every complete line in `pending`, and any run of `MAX_LINE` bytes without a
/// newline, keeping the rest for later.
pub fn write_lines(pending: &mut Vec<u8>, stream: &str, log: &mut JsonLog) {
    let mut start = 0;
    loop {
        let rest = &pending[start..];
        let end = match rest.iter().position(|b| *b == b'\n') {
            Some(nl) if nl < MAX_LINE => nl + 1,
            _ if rest.len() >= MAX_LINE => MAX_LINE,
            _ => break,
        };
        let _ = log.write(stream, &rest[..end]);
        start += end;
    }
    pending.drain(..start);
}
