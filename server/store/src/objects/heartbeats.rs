//! Node heartbeats: a key per node on a lease that its agent keeps alive. The key
//! exists while the node is alive; the node controller follows the set.

use std::time::Duration;

use super::follow::{follow, Follower};
use super::keys::HEARTBEAT_PREFIX;
use super::retry::Tries;
use super::{ObjectStore, Result};
use crate::{LeaseId, StoreError};

impl ObjectStore {
    /// A fresh lease of `ttl` for records that should vanish with their writer (Events
    /// of a controller that is gone).
    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        Ok(self.store.grant_lease(ttl).await?)
    }

    /// Puts `node`'s heartbeat key on a new lease of `ttl` and returns the lease, which
    /// the agent then keeps alive with [`keep_heartbeat`](Self::keep_heartbeat).
    pub async fn start_heartbeat(&self, node: &str, ttl: Duration) -> Result<LeaseId> {
        let lease = self.store.grant_lease(ttl).await?;
        let key = format!("{HEARTBEAT_PREFIX}{node}");
        let value = node.as_bytes().to_vec();
        let mut tries = Tries::new("heartbeat", node);
        loop {
            tries.begin().await?;
            let written = match self.store.get(&key).await? {
                None => self.store.create(&key, value.clone(), Some(lease)).await,
                Some(kv) => {
                    let r = (self.store)
                        .update(&key, value.clone(), kv.mod_revision, Some(lease))
                        .await;
                    if let Err(StoreError::Conflict { current, .. }) = r {
                        tries.lost(current);
                    }
                    r
                }
            };
            match written {
                Ok(_) => return Ok(lease),
                // The old lease lapsed or another registration raced this one.
                Err(
                    StoreError::Conflict { .. }
                    | StoreError::AlreadyExists { .. }
                    | StoreError::NotFound { .. },
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Keeps a heartbeat lease alive; `LeaseNotFound` once it has lapsed.
    pub async fn keep_heartbeat(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.store.keep_alive(lease).await
    }

    /// Follows the set of nodes with a live heartbeat (items are node names).
    pub async fn follow_heartbeats(&self, follower: &mut impl Follower<()>) {
        follow(&*self.store, HEARTBEAT_PREFIX, |_| Ok(()), follower).await
    }
}
