//! The tasks input: the output of the node's tasks that its selector picks, read
//! from the json-file logs their monitors write, one follower per task. Because the
//! monitors write those files whether or not anything reads them, lines written
//! while the agent was down are read when it is back (from the saved positions), and
//! an output that blocks leaves them waiting on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::tag::TagTemplate;
use shoal_api::TaskSelector;
use shoal_logs::parse::Parser;
use shoal_logs::tail::Tail;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::running::InputCounters;
use crate::tail_in::{Joining, Lines, TailIn};

/// One task on this node whose output may be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLog {
    /// Empty for a task of no service (`shoal run`).
    pub service: String,
    pub task: String,
    pub labels: BTreeMap<String, String>,
    /// The directory holding its `container.log` (and rotated `container.log.N`).
    pub dir: PathBuf,
    /// Its container id: positions are kept per container.
    pub container: String,
}

pub struct TasksIn {
    pub node: String,
    pub template: TagTemplate,
    pub selector: TaskSelector,
    pub parser: Option<Parser>,
    pub joining: Option<Joining>,
    /// A positions file per container in here.
    pub positions: PathBuf,
    pub engine: Arc<Engine>,
    pub counters: InputCounters,
}

const POLL: Duration = Duration::from_millis(100);
const MAX_LINE: usize = 1 << 20;

impl TasksIn {
    fn selects(&self, t: &TaskLog) -> bool {
        self.selector
            .service
            .as_ref()
            .is_none_or(|s| *s == t.service)
            && self
                .selector
                .labels
                .iter()
                .all(|(k, v)| t.labels.get(k) == Some(v))
    }

    /// Follows the selected tasks as the node's task set changes, until `shutdown`.
    pub async fn run(self, mut tasks: watch::Receiver<Vec<TaskLog>>, shutdown: CancellationToken) {
        let mut following: HashMap<String, CancellationToken> = HashMap::new();
        loop {
            let now: Vec<TaskLog> = tasks
                .borrow_and_update()
                .iter()
                .filter(|t| self.selects(t))
                .cloned()
                .collect();
            // A task that left (removed, moved) is no longer followed; its container's
            // files go with it.
            following.retain(|container, stop| {
                let kept = now.iter().any(|t| &t.container == container);
                if !kept {
                    stop.cancel();
                }
                kept
            });
            for t in now {
                if following.contains_key(&t.container) {
                    continue;
                }
                let stop = shutdown.child_token();
                match self.follow(&t) {
                    Ok((input, tail)) => {
                        tokio::spawn(input.run(tail, stop.clone()));
                    }
                    Err(why) => {
                        tracing::warn!(task = %t.task, error = %why, "tasks input: cannot follow")
                    }
                }
                following.insert(t.container.clone(), stop);
            }
            tokio::select! {
                changed = tasks.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn follow(&self, t: &TaskLog) -> Result<(Arc<TailIn>, Tail), String> {
        let glob = t.dir.join(format!("{}*", shoal_monitor::LOG_FILE));
        let tail = Tail::open(
            &glob.to_string_lossy(),
            &self.positions.join(&t.container),
            MAX_LINE,
        )
        .map_err(|e| e.to_string())?;
        let input = Arc::new(TailIn {
            tag: self.template.render(&t.service, &t.task, &self.node),
            lines: Lines::JsonFile,
            parser: self.parser.clone(),
            joining: self.joining.clone(),
            engine: self.engine.clone(),
            poll: POLL,
            events: self.counters.events.clone(),
            unparsed: self.counters.unparsed.clone(),
        });
        Ok((input, tail))
    }
}
