//! Every label and annotation key shoal itself writes or reads, in one place: no other
//! crate spells them.

/// On a Task: the Service that owns it.
pub const SERVICE: &str = "shoal.dev/service";
/// On a Task: its slot in the service (`1..replicas`, a node name for global services,
/// a run's index for jobs).
pub const SLOT: &str = "shoal.dev/slot";
/// On a Task: the hash of the container template it was made from.
pub const TEMPLATE: &str = "shoal.dev/template";
/// On a Task: which attempt at its slot it is.
pub const ATTEMPT: &str = "shoal.dev/attempt";
/// On a Task: `"true"` once it was moved to a history name.
pub const HISTORY: &str = "shoal.dev/history";
/// On a Task: its service's mode (`job`, `cron`) when not replicated.
pub const MODE: &str = "shoal.dev/mode";
/// On a cron Task: the tick it runs for.
pub const RUN: &str = "shoal.dev/run";
/// On a Node: `"true"` for one `shoal sim` simulates.
pub const SIMULATED: &str = "shoal.dev/simulated";

/// On any object: the GitSync that owns it.
pub const GITSYNC: &str = "shoal.dev/gitsync";
/// On a GitSync: a sync asked for at this time (`shoal gitsync sync`, the webhook).
pub const SYNC_REQUESTED: &str = "shoal.dev/sync-requested";
/// On any object: `disabled` keeps a GitSync's hands off it.
pub const RECONCILE: &str = "shoal.dev/reconcile";

/// On a Task: a `shoal start` asked for at this time.
pub const START: &str = "shoal.dev/start";
/// On a Task: the grace period of the stop asked for (`shoal stop -t`), overriding the
/// node's default between SIGTERM and SIGKILL.
pub const STOP_GRACE_PERIOD: &str = "shoal.dev/stop-grace-period";
