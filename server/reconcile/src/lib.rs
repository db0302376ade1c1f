//! The reconcile runtime: what kube-runtime is to Kubernetes operators, written here on
//! tokio over shoal's `Store`.
//!
//! - [`Reflector`]: a watch-backed cache of one kind, relisting when history is
//!   compacted; [`Informers`] hands out one per kind, shared by all controllers.
//! - [`WorkQueue`]: keyed, deduplicated, never hands out a key that is being worked on,
//!   with delayed re-adds for backoff and requeue-after.
//! - [`Controller`]: runs `reconcile(obj, ctx) -> Result<Action, E>` for every object
//!   that changed (or whose dependents changed), with an `error_policy` for failures.
//! - [`EventRecorder`]: Events for users, repeats merged by count, expiring on a lease.
//! - [`LeaderElection`]: one server runs the controllers; another takes over when it
//!   dies.
//!
//! # Guarantees
//! - Reconcile is level-triggered: it is called with the current cached object, never
//!   with the event that caused it; several changes may collapse into one call.
//! - One object is never reconciled twice at once.
//! - A failed reconcile is retried with exponential backoff (per object, capped).
//!
//! # Assumptions
//! - `reconcile` is idempotent and reads whatever else it needs itself.

mod cache;
mod controller;
mod events;
mod informers;
mod leader;
mod queue;

pub use cache::{Change, Reader, Reflector};
pub use controller::{Action, Controller, ControllerConfig};
pub use events::EventRecorder;
pub use informers::Informers;
pub use leader::LeaderElection;
pub use queue::{Backoff, WorkQueue};
pub use tokio_util::sync::CancellationToken;
