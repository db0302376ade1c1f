//! `shoal exec [-i] [-t] TASK -- CMD..`: runs a command in a task's container; exits with
//! its exit code. `-i` forwards stdin; `-t` asks for a terminal (and, when stdin is one,
//! puts it in raw mode and follows its size).

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;

use nix::sys::termios;
use shoal_wire::pb;
use tokio::sync::mpsc;

use super::Context;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    tty: bool,
    /// The task (`web.1`, or `task/web.1`).
    task: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

/// The local terminal in raw mode while this lives.
struct RawMode(termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), termios::SetArg::TCSANOW, &self.0);
    }
}

/// The local terminal's size (rows, cols), if stdout is one.
fn terminal_size() -> Option<(u32, u32)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which outlives the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then(|| (u32::from(size.ws_row), u32::from(size.ws_col)))
}

/// Reads stdin on a thread of its own (it blocks) into the request stream.
fn send_stdin(tx: mpsc::Sender<pb::ExecInput>) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 8192];
        loop {
            let (data, close) = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => (Vec::new(), true),
                Ok(n) => (buf[..n].to_vec(), false),
            };
            let input = pb::ExecInput {
                stdin: data,
                close_stdin: close,
                ..Default::default()
            };
            if tx.blocking_send(input).is_err() || close {
                return;
            }
        }
    });
}

/// Sends the terminal's new size whenever it changes.
fn send_resizes(tx: mpsc::Sender<pb::ExecInput>) {
    tokio::spawn(async move {
        let Ok(mut changes) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while changes.recv().await.is_some() {
            let Some((rows, cols)) = terminal_size() else {
                continue;
            };
            let resize = pb::ExecInput {
                rows,
                cols,
                ..Default::default()
            };
            if tx.send(resize).await.is_err() {
                return;
            }
        }
    });
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    use std::io::IsTerminal;
    let task = a.task.strip_prefix("task/").unwrap_or(&a.task).to_string();
    let (rows, cols) = if a.tty {
        terminal_size().unwrap_or((24, 80))
    } else {
        (0, 0)
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::ExecInput {
        start: Some(pb::ExecRequest {
            target: task,
            command: a.command,
            tty: a.tty,
            stdin: a.interactive,
            rows,
            cols,
        }),
        ..Default::default()
    })
    .await?;
    if a.interactive {
        send_stdin(tx.clone());
    }
    if a.tty {
        send_resizes(tx.clone());
    }
    drop(tx);
    let mut client = ctx.client().await?;
    let mut stream = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    // Raw only once the command runs, so that errors before print normally.
    let _raw = (a.tty && a.interactive && std::io::stdin().is_terminal())
        .then(RawMode::enter)
        .flatten();
    let mut code = 0;
    while let Some(o) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        match o.stream.as_str() {
            "stdout" => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&o.data);
                let _ = out.flush();
            }
            "stderr" => {
                let _ = std::io::stderr().write_all(&o.data);
            }
            _ => code = o.exit_code,
        }
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
