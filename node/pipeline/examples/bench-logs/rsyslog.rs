//! The real peer: rsyslog (Debian's package) doing the same tail → TCP job on the
//! same file, imfile into omfwd over TCP, in the same run.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::sinks::tcp_counter;

/// Seconds until every line of `file` arrived through rsyslog; None without rsyslogd.
pub async fn tail_to_tcp(dir: &Path, file: &Path, lines: u64) -> Option<f64> {
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let (port, counted) = tcp_counter().await;
    let work = dir.join("rsyslog");
    std::fs::create_dir_all(&work).expect("rsyslog dir");
    let conf = work.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}")
module(load="imfile")
input(type="imfile" file="{file}" tag="app" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         template="RSYSLOG_ForwardFormat"
         queue.type="LinkedList" queue.size="200000" queue.dequeueBatchSize="4096")
}}
"#,
            work = work.display(),
            file = file.display(),
        ),
    )
    .expect("rsyslog.conf");
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(rsyslogd)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(work.join("rsyslogd.pid"))
        .kill_on_drop(true)
        .spawn()
        .expect("start rsyslogd");
    while counted.lines.load(Ordering::Relaxed) < lines {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("rsyslogd ended: {status}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = child.kill().await;
    Some(secs)
}
