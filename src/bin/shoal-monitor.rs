//! `shoal-monitor`: one container's monitor, started by the agent (not for people).
//! A program of its own rather than a `shoal` subcommand so that each container's
//! monitor maps a small binary and no async runtime.

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match shoal_monitor::MonitorConfig::from_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-monitor: {e}");
            return ExitCode::from(2);
        }
    };
    match shoal_monitor::run_monitor(&config) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("shoal-monitor: {e}");
            ExitCode::from(125)
        }
    }
}
