//! Restarts in place (`docker run --restart`): whether and when an ended container runs
//! again on the same node, before its service would replace the task.

use std::time::Duration;

use shoal_api::{DesiredState, RestartCondition, Task};

/// How long to wait before restarting a task's container in place, if its restart
/// policy says to: `any` always, `on-failure` after a non-zero exit, each up to
/// `maxAttempts` times (0: no limit). Never for a task asked to stop.
pub(super) fn restart_delay(task: &Task, exit_code: i32, restarts: u32) -> Option<Duration> {
    let policy = task.spec.restart.as_ref()?;
    if task.spec.desired_state == DesiredState::Shutdown {
        return None;
    }
    let again = match policy.condition.unwrap_or(RestartCondition::Any) {
        RestartCondition::None => false,
        RestartCondition::OnFailure => exit_code != 0,
        RestartCondition::Any => true,
    };
    let attempts_left = policy.max_attempts == 0 || restarts < policy.max_attempts;
    (again && attempts_left).then_some(policy.delay.0)
}
