//! Leader election on a store lease, so that with several servers exactly one runs the
//! controllers.
//!
//! The leader holds a key created under a lease it keeps alive. If it dies, the lease
//! expires and the key disappears; the others watch the key and race to create it.
//! A leader that cannot renew its lease in time steps down (cancels its work) before
//! the lease can expire, so two leaders never act at once for longer than a renewal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoal_store::{EventType, Store, StoreError};
use tokio_util::sync::CancellationToken;

pub struct LeaderElection {
    store: Arc<dyn Store>,
    key: String,
    identity: String,
    ttl: Duration,
    sole: bool,
}

impl LeaderElection {
    pub fn new(store: Arc<dyn Store>, key: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderElection {
            store,
            key: key.into(),
            identity: identity.into(),
            ttl: Duration::from_secs(3),
            sole: false,
        }
    }

    /// This process is the only one that can ever hold the role (the embedded store's
    /// file is locked to one process): a leader key found at start is a dead process's,
    /// so it is taken over at once instead of after its lease runs out. A restarted
    /// single server resumes its controllers without waiting a TTL.
    pub fn sole_contender(mut self, sole: bool) -> Self {
        self.sole = sole;
        self
    }

    /// How long a dead leader keeps the role before another takes over.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Campaigns until `shutdown`; while leading, runs `lead(token)`, where `token` is
    /// cancelled when leadership is lost. Resigns (revokes the lease) on shutdown so a
    /// successor takes over at once.
    pub async fn run<F, Fut>(self, shutdown: CancellationToken, lead: F)
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        if self.sole {
            match self.store.delete(&self.key, None).await {
                Ok(_) => tracing::info!("took over the controller lease of a previous run"),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "cannot clear a previous run's lease"),
            }
        }
        while !shutdown.is_cancelled() {
            match self.try_acquire().await {
                Ok(Some(lease)) => {
                    tracing::info!(identity = %self.identity, "became the controller leader");
                    let term = shutdown.child_token();
                    let work = lead(term.clone());
                    tokio::pin!(work);
                    tokio::select! {
                        _ = &mut work => {}
                        _ = self.renew(lease, term.clone()) => {
                            if !term.is_cancelled() {
                                tracing::warn!(identity = %self.identity, "lost the controller lease; stepping down");
                            }
                            // Let the controllers stop cleanly, but not for longer than
                            // the lease: by then another leader may be acting.
                            term.cancel();
                            if tokio::time::timeout(self.ttl, &mut work).await.is_err() {
                                tracing::warn!("controllers did not stop within the lease TTL");
                            }
                        }
                    }
                    term.cancel();
                    // Best effort: on a lost lease this fails, which is fine.
                    let _ = self.store.revoke_lease(lease).await;
                }
                Ok(None) => self.wait_for_vacancy(&shutdown).await,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: store error; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(self.ttl / 3) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    async fn try_acquire(&self) -> Result<Option<i64>, StoreError> {
        let lease = self.store.grant_lease(self.ttl).await?;
        match self
            .store
            .create(&self.key, self.identity.clone().into_bytes(), Some(lease))
            .await
        {
            Ok(_) => Ok(Some(lease)),
            Err(StoreError::AlreadyExists { .. }) => {
                let _ = self.store.revoke_lease(lease).await;
                Ok(None)
            }
            Err(e) => {
                let _ = self.store.revoke_lease(lease).await;
                Err(e)
            }
        }
    }

    /// Keeps the lease alive, renewing every third of the TTL; returns when `term` is
    /// cancelled, the lease is gone, or no renewal has succeeded for two thirds of the
    /// TTL (client-go's renew deadline): the leader stops a third of a TTL before the
    /// lease can lapse, and one slow renewal under load is not a lost leadership.
    async fn renew(&self, lease: i64, term: CancellationToken) {
        let period = self.ttl / 3;
        let mut renewed = tokio::time::Instant::now();
        let mut pause = period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = term.cancelled() => return,
            }
            let deadline = renewed + period * 2;
            // The lease runs a full TTL from when etcd processes the renewal, which is
            // after it was sent: counting from the send keeps the deadline safe.
            let sent = tokio::time::Instant::now();
            let attempt = tokio::time::timeout_at(deadline, self.store.keep_alive(lease));
            // After a failure, try again soon: the deadline is closer.
            pause = period / 4;
            match attempt.await {
                Ok(Ok(())) => {
                    renewed = sent;
                    pause = period;
                }
                Ok(Err(StoreError::LeaseNotFound(_))) => {
                    tracing::warn!("controller lease expired");
                    return;
                }
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "controller lease renewal failed; retrying");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "controller lease renewal failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!("controller lease not renewed within the renew deadline");
                    return;
                }
            }
        }
    }

    /// Returns when the leader key is deleted, or after a while to re-check.
    async fn wait_for_vacancy(&self, shutdown: &CancellationToken) {
        let watch = async {
            let rev = self.store.revision().await?;
            if self.store.get(&self.key).await?.is_none() {
                return Ok(());
            }
            let mut stream = self.store.watch(&self.key, rev + 1).await?;
            while let Some(ev) = stream.next().await {
                let ev = ev?;
                if ev.kv.key == self.key && ev.event_type == EventType::Delete {
                    return Ok(());
                }
            }
            Ok::<(), StoreError>(())
        };
        tokio::select! {
            r = watch => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "leader watch ended");
                    tokio::time::sleep(self.ttl / 3).await;
                }
            }
            _ = tokio::time::sleep(self.ttl * 10) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}
