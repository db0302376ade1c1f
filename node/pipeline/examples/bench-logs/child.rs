//! The pipeline under test in a process of its own, started from a LogPipeline
//! manifest as a node starts it, so its peak memory is its own.

use std::path::{Path, PathBuf};

use shoal_api::LogPipeline;
use shoal_pipeline::build::{start, Place};
use shoal_pipeline::tasks_in::TaskLog;

/// `bench-logs --pipeline MANIFEST --state DIR [--task-dir DIR]`: runs until killed.
pub async fn run(manifest: &Path, state: &Path, task_dir: Option<PathBuf>) {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let pipeline: LogPipeline = serde_yaml::from_str(&text).expect("a LogPipeline");
    let tasks: Vec<TaskLog> = task_dir
        .into_iter()
        .map(|dir| TaskLog {
            service: "bench".into(),
            task: "bench.1".into(),
            labels: Default::default(),
            dir,
            container: "bench".into(),
        })
        .collect();
    let (_keep, rx) = tokio::sync::watch::channel(tasks);
    let place = Place {
        node: "bench".into(),
        dir: state.to_path_buf(),
        memory_dir: state.join("memory"),
        tasks: rx,
    };
    let _running = start("bench", 1, &pipeline.spec, place)
        .await
        .expect("the pipeline starts");
    std::future::pending::<()>().await;
}

/// A running pipeline process.
pub struct Pipeline(tokio::process::Child);

impl Pipeline {
    pub fn spawn(dir: &Path, name: &str, manifest: &str, task_dir: Option<&Path>) -> Pipeline {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, manifest).expect("write the manifest");
        let mut cmd = tokio::process::Command::new(std::env::current_exe().expect("exe"));
        cmd.arg("--pipeline")
            .arg(&file)
            .arg("--state")
            .arg(dir.join(format!("{name}-state")))
            .kill_on_drop(true);
        if let Some(t) = task_dir {
            cmd.arg("--task-dir").arg(t);
        }
        Pipeline(cmd.spawn().expect("start the pipeline process"))
    }

    /// Its peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let pid = self.0.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}
