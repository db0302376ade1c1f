//! Health checking of a running container, as Docker does it: a check every
//! `interval`, failures during `startPeriod` not counted, `retries` failures in a row
//! make it unhealthy.

use shoal_api::{Health, HealthCheck};
use tokio::time::Instant;

/// What one check result changes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing to report.
    Same,
    /// The container is healthy (again).
    Healthy,
    /// Too many failures in a row: the task fails, with this message.
    Unhealthy(String),
}

pub(super) struct Probe {
    pub(super) check: HealthCheck,
    started: Instant,
    next: Instant,
    failures: u32,
    pub(super) health: Health,
}

impl Probe {
    /// A probe of a container that started at `started`: its first check is due now.
    pub(super) fn new(check: HealthCheck, started: Instant) -> Self {
        Probe {
            check,
            started,
            next: started,
            failures: 0,
            health: Health::Starting,
        }
    }

    pub(super) fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// Records the result of the check that was due.
    pub(super) fn record(&mut self, result: Result<(), String>) -> Verdict {
        self.next = Instant::now() + self.check.interval.0;
        match result {
            Ok(()) => {
                self.failures = 0;
                if self.health == Health::Healthy {
                    return Verdict::Same;
                }
                self.health = Health::Healthy;
                Verdict::Healthy
            }
            // Failures while the container is still starting up do not count.
            Err(_) if self.started.elapsed() < self.check.start_period.0 => Verdict::Same,
            Err(why) => {
                self.failures += 1;
                if self.failures < self.check.retries {
                    return Verdict::Same;
                }
                self.health = Health::Unhealthy;
                Verdict::Unhealthy(format!(
                    "unhealthy: the health check failed {} times in a row ({why})",
                    self.failures
                ))
            }
        }
    }
}
