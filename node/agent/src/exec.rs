//! Commands run in containers for `shoal exec`: with pipes, or with a terminal (runc
//! makes the container's pty and relays it to one the agent holds).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use shoal_wire::pb;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

pub type ExecStream = ReceiverStream<Result<pb::ExecOutput, Status>>;
type Tx = mpsc::Sender<Result<pb::ExecOutput, Status>>;

fn output(stream: &str, data: Vec<u8>, exit_code: i32) -> pb::ExecOutput {
    pb::ExecOutput {
        stream: stream.into(),
        data,
        exit_code,
    }
}

/// The runtime and where it keeps its state.
pub struct Runtime {
    pub binary: PathBuf,
    pub root: PathBuf,
}

impl Runtime {
    fn exec(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).arg("exec");
        cmd
    }
}

/// Runs `start.command` in container `start.target`; `inputs` carry stdin and resizes.
pub async fn exec(
    runtime: &Runtime,
    start: pb::ExecRequest,
    inputs: Streaming<pb::ExecInput>,
) -> Result<ExecStream, Status> {
    if start.command.is_empty() {
        return Err(Status::invalid_argument("no command to run"));
    }
    let (tx, rx) = mpsc::channel(64);
    if start.tty {
        with_terminal(runtime, start, inputs, tx).await?;
    } else {
        with_pipes(runtime, start, inputs, tx)?;
    }
    Ok(ReceiverStream::new(rx))
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    match status {
        Ok(s) => s.code().unwrap_or(128 + 9),
        Err(_) => 255,
    }
}

fn with_pipes(
    runtime: &Runtime,
    start: pb::ExecRequest,
    mut inputs: Streaming<pb::ExecInput>,
    tx: Tx,
) -> Result<(), Status> {
    let mut child = runtime
        .exec()
        .arg(&start.target)
        .args(&start.command)
        .stdin(if start.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Status::internal(format!("{}: {e}", runtime.binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            while let Ok(Some(input)) = inputs.message().await {
                if !input.stdin.is_empty() && stdin.write_all(&input.stdin).await.is_err() {
                    return;
                }
                if input.close_stdin {
                    return;
                }
            }
        });
    }
    let (out, err) = (child.stdout.take(), child.stderr.take());
    tokio::spawn(async move {
        let stdout = async {
            if let Some(out) = out {
                forward(out, "stdout", tx.clone()).await;
            }
        };
        let stderr = async {
            if let Some(err) = err {
                forward(err, "stderr", tx.clone()).await;
            }
        };
        tokio::join!(stdout, stderr);
        let code = exit_code(child.wait().await);
        let _ = tx.send(Ok(output("exit", Vec::new(), code))).await;
    });
    Ok(())
}

async fn forward(mut r: impl tokio::io::AsyncRead + Unpin, stream: &str, tx: Tx) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send(Ok(output(stream, buf[..n].to_vec(), 0)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn resize(master: &OwnedFd, rows: u32, cols: u32) {
    if rows == 0 || cols == 0 {
        return;
    }
    let size = libc::winsize {
        ws_row: rows.min(u32::from(u16::MAX)) as u16,
        ws_col: cols.min(u32::from(u16::MAX)) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
    }
}

/// A terminal for the command: runc, attached to a pty of ours, makes one in the
/// container and relays between them (the console socket would need a detached exec,
/// and then nobody could wait for its exit code).
async fn with_terminal(
    runtime: &Runtime,
    start: pb::ExecRequest,
    mut inputs: Streaming<pb::ExecInput>,
    tx: Tx,
) -> Result<(), Status> {
    let pty = nix::pty::openpty(None, None)
        .map_err(|e| Status::internal(format!("allocating a terminal: {e}")))?;
    let master = Arc::new(pty.master);
    resize(&master, start.rows, start.cols);
    let slave = |what: &str| {
        pty.slave
            .try_clone()
            .map(Stdio::from)
            .map_err(|e| Status::internal(format!("terminal {what}: {e}")))
    };
    let mut child = runtime
        .exec()
        .arg("--tty")
        .args(["--env", "TERM=xterm"])
        .arg(&start.target)
        .args(&start.command)
        .stdin(slave("stdin")?)
        .stdout(slave("stdout")?)
        .stderr(slave("stderr")?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Status::internal(format!("{}: {e}", runtime.binary.display())))?;
    // Only runc holds the terminal now: its output ends when runc does.
    drop(pty.slave);
    let runc = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    let reader = File::from(
        master
            .try_clone()
            .map_err(|e| Status::internal(e.to_string()))?,
    );
    let out_tx = tx.clone();
    let reading = tokio::task::spawn_blocking(move || relay_output(reader, out_tx));
    let writer_master = master.clone();
    tokio::spawn(async move {
        while let Ok(Some(input)) = inputs.message().await {
            if input.rows > 0 && input.cols > 0 {
                resize(&writer_master, input.rows, input.cols);
                // runc passes a new size on to the container's terminal on SIGWINCH.
                if let Some(pid) = runc {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH);
                }
            }
            let mut data = input.stdin;
            if input.close_stdin {
                data.push(0x04); // end of input, as a terminal's ^D
            }
            if data.is_empty() {
                continue;
            }
            let Ok(fd) = writer_master.try_clone() else {
                return;
            };
            let written =
                tokio::task::spawn_blocking(move || File::from(fd).write_all(&data)).await;
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let code = exit_code(child.wait().await);
        let _ = tokio::time::timeout(Duration::from_secs(2), reading).await;
        let _ = tx.send(Ok(output("exit", Vec::new(), code))).await;
    });
    Ok(())
}

fn relay_output(mut master: File, tx: Tx) {
    let mut buf = vec![0u8; 8192];
    loop {
        match master.read(&mut buf) {
            // EIO: the other side of the terminal is closed.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .blocking_send(Ok(output("stdout", buf[..n].to_vec(), 0)))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
