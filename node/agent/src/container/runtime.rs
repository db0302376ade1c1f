//! What supervision asks of a container's runtime, behind a trait: the real one is runc
//! under a `shoal-monitor` (`runc.rs`); tests use [`fake::FakeRuntime`], which records
//! every call and lets a test say how its containers behave.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use shoal_api::Task;
use shoal_monitor::Exit;

use crate::session::Reporter;

/// A container's place on the node network.
pub struct Attachment {
    pub addresses: Vec<String>,
    /// Held while the container is supervised: its published ports close on drop.
    pub hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Claims the container's address and publishes its ports (an adopted container
    /// keeps the address it had); the addresses, or why the task cannot run here.
    async fn attach(&self, task: &Task, id: &str, adopted: bool) -> Result<Attachment, String>;
    /// Prepares (image, rootfs, bundle) and runs the container under a new monitor;
    /// returns once it runs or has already ended.
    async fn run(
        &self,
        task: &Task,
        reporter: &Reporter,
        dir: &Path,
        id: &str,
        addresses: &[String],
    ) -> Result<(), String>;
    /// Runs the same bundle again (a restart in place, `shoal start`).
    async fn restart(&self, task: &Task, dir: &Path, id: &str) -> Result<(), String>;
    /// Whether the runtime still knows the container (`runc state`).
    async fn exists(&self, id: &str) -> bool;
    /// The container's exit, once its monitor has recorded it.
    fn exit(&self, dir: &Path) -> Option<Exit>;
    /// Sends `signal` (`TERM`, `KILL`) to the container's process.
    async fn kill(&self, id: &str, signal: &str);
    /// Runs `cmd` in the container within `timeout`; Err says how it failed.
    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<(), String>;
    /// Forgets the container in the runtime, detaches its network, removes its files.
    async fn delete(&self, id: &str, dir: &Path);
}

#[cfg(test)]
pub mod fake {
    //! A runtime in memory: containers run until a test (or a signal they heed) ends
    //! them; health checks answer as the test says.

    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Container {
        exit: Option<i32>,
        ignores_term: bool,
    }

    #[derive(Default)]
    pub struct FakeRuntime {
        containers: Mutex<HashMap<String, Container>>,
        calls: Mutex<Vec<String>>,
        /// Exit codes for the next runs, in order: a container started when the list
        /// is empty runs until stopped.
        exits: Mutex<VecDeque<i32>>,
        /// Whether each next health check passes (empty: it passes).
        checks: Mutex<VecDeque<bool>>,
        ignore_term: Mutex<bool>,
    }

    fn key(dir: &Path) -> String {
        dir.to_string_lossy().into_owned()
    }

    impl FakeRuntime {
        /// The next containers exit with these codes as soon as they run.
        pub fn exit_with(&self, codes: &[i32]) {
            self.exits.lock().unwrap().extend(codes);
        }

        /// The next health checks fail (false) or pass (true) in this order.
        pub fn checks(&self, results: &[bool]) {
            self.checks.lock().unwrap().extend(results);
        }

        /// Containers started from now on ignore SIGTERM (as busybox httpd as PID 1).
        pub fn ignore_term(&self) {
            *self.ignore_term.lock().unwrap() = true;
        }

        /// Every call so far, as `verb id [detail]`.
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn call(&self, what: String) {
            self.calls.lock().unwrap().push(what);
        }

        fn launch(&self, dir: &Path) {
            let exit = self.exits.lock().unwrap().pop_front();
            let ignores_term = *self.ignore_term.lock().unwrap();
            self.containers
                .lock()
                .unwrap()
                .insert(key(dir), Container { exit, ignores_term });
        }
    }

    #[async_trait]
    impl ContainerRuntime for FakeRuntime {
        async fn attach(&self, _: &Task, id: &str, _: bool) -> Result<Attachment, String> {
            self.call(format!("attach {id}"));
            Ok(Attachment {
                addresses: vec!["10.0.0.2".into()],
                hold: None,
            })
        }

        async fn run(
            &self,
            _: &Task,
            _: &Reporter,
            dir: &Path,
            id: &str,
            _: &[String],
        ) -> Result<(), String> {
            self.call(format!("run {id}"));
            self.launch(dir);
            Ok(())
        }

        async fn restart(&self, _: &Task, dir: &Path, id: &str) -> Result<(), String> {
            self.call(format!("restart {id}"));
            self.launch(dir);
            Ok(())
        }

        async fn exists(&self, _: &str) -> bool {
            true
        }

        fn exit(&self, dir: &Path) -> Option<Exit> {
            let code = self.containers.lock().unwrap().get(&key(dir))?.exit?;
            Some(Exit {
                exit_code: code,
                finished_at: chrono::Utc::now(),
            })
        }

        async fn kill(&self, id: &str, signal: &str) {
            self.call(format!("kill {id} {signal}"));
            for c in self.containers.lock().unwrap().values_mut() {
                if c.exit.is_none() && (signal == "KILL" || !c.ignores_term) {
                    c.exit = Some(if signal == "KILL" { 137 } else { 143 });
                }
            }
        }

        async fn exec(&self, id: &str, cmd: &[String], _: Duration) -> Result<(), String> {
            self.call(format!("exec {id} {}", cmd.join(" ")));
            match self.checks.lock().unwrap().pop_front() {
                Some(false) => Err("exit code 1".into()),
                _ => Ok(()),
            }
        }

        async fn delete(&self, id: &str, dir: &Path) {
            self.call(format!("delete {id}"));
            self.containers.lock().unwrap().remove(&key(dir));
        }
    }
}
