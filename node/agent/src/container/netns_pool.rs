//! Network namespaces made ahead of need, so a starting task does not wait on the
//! kernel for its own.
//!
//! Creating a namespace and a veth takes kernel locks (rtnl, the namespace list) that
//! every other link change on the node waits for: 50 tasks starting together queue
//! behind each other there (docs/performance.md has the figures). A slot is a
//! namespace already on the node bridge, with lo and `eth0` up, its address and its
//! default route, kept at `<data>/netns-pool/pool-N` with its address claimed for
//! `pool-N`. A task takes one with a bind mount and a rename of its address's claim
//! ([`Network::hand_over`]), and the filler makes the next one while the task starts;
//! when more start at once than the pool holds, the rest make their own as before.
//!
//! A slot's host end is named after its address (`shp` and eight hex digits), not its
//! slot number: the number starts again with every agent, the address is unique for as
//! long as a container holds it. A stopping agent empties its pool; a killed one
//! leaves it, and the next agent takes over every slot that is still whole (its
//! namespace mounted, its address claimed for it) and removes the rest, so a
//! restart does not tear down and rebuild the kernel's side of 32 namespaces while
//! it is adopting its containers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::network::{Attachment, Network};

/// The prefix of a slot's name (and of the id its address is claimed for).
const SLOT: &str = "pool-";

/// A namespace ready to be handed to a container.
struct Slot {
    name: String,
    ip: Ipv4Addr,
    netns: PathBuf,
}

pub struct Pool {
    size: usize,
    dir: PathBuf,
    ready: Mutex<Vec<Slot>>,
    /// Told when a slot is taken: the filler makes another.
    taken: Notify,
    next: AtomicU64,
}

impl Pool {
    pub(super) fn new(size: usize, data_dir: &Path) -> Self {
        Pool {
            size,
            dir: data_dir.join("netns-pool"),
            ready: Mutex::new(Vec::new()),
            taken: Notify::new(),
            next: AtomicU64::new(0),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many slots are ready now.
    pub fn ready(&self) -> usize {
        self.slots().len()
    }

    /// A ready namespace moved to container `id`'s place, with its address now `id`'s;
    /// None when none is ready or the hand-over failed (the slot is then removed).
    pub(super) async fn hand_out(&self, net: &Network, id: &str) -> Option<Attachment> {
        let slot = self.slots().pop()?;
        self.taken.notify_one();
        let netns = net.netns_path(id);
        let moved = async {
            if let Some(dir) = netns.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            if netns.exists() {
                let _ = net.ops().remove_netns(&netns).await;
            }
            net.ops().move_netns(&slot.netns, &netns).await?;
            net.hand_over(slot.ip, &slot.name, id)
                .map_err(|e| e.to_string())
        }
        .await;
        match moved {
            Ok(()) => Some(Attachment { ip: slot.ip, netns }),
            Err(why) => {
                tracing::warn!(container = %id, error = %why, "could not take a prepared namespace; making one");
                net.remove(&slot.name, &slot.netns).await;
                net.remove(id, &netns).await;
                None
            }
        }
    }

    /// One more slot, made now.
    async fn make(&self, net: &Network) -> Result<(), String> {
        let name = format!("{SLOT}{}", self.next.fetch_add(1, Ordering::Relaxed));
        let netns = self.dir.join(&name);
        let ip = net.claim(&name).map_err(|e| e.to_string())?;
        let host_if = format!("shp{:08x}", u32::from(ip));
        let attached = net
            .make(&name, &netns, &host_if)
            .await
            .map_err(|e| e.to_string())?;
        self.slots().push(Slot {
            name,
            ip: attached.ip,
            netns,
        });
        Ok(())
    }

    /// Takes over the slots an earlier agent left that are whole, and removes the
    /// others (and addresses claimed for a slot that is gone).
    async fn take_over(&self, net: &Network) {
        let mut kept = Vec::new();
        let files = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        for file in files {
            let (path, name) = (file.path(), file.file_name().to_string_lossy().into_owned());
            let number = name.strip_prefix(SLOT).and_then(|n| n.parse::<u64>().ok());
            match (number, net.address_of(&name)) {
                (Some(n), Some(ip)) if net.ops().holds_netns(&path) => {
                    self.next.fetch_max(n + 1, Ordering::Relaxed);
                    kept.push(name.clone());
                    self.slots().push(Slot {
                        name,
                        ip,
                        netns: path,
                    });
                }
                _ => {
                    let _ = net.ops().remove_netns(&path).await;
                    net.release(&name);
                }
            }
        }
        for name in net.owners_starting(SLOT) {
            if !kept.contains(&name) {
                net.release(&name);
            }
        }
        if !kept.is_empty() {
            tracing::info!(
                slots = kept.len(),
                "took over the prepared namespaces an earlier agent left"
            );
        }
    }

    /// Removes every slot, ready or left by an earlier agent: namespaces in the pool's
    /// directory, and addresses claimed for a slot.
    pub(super) async fn empty(&self, net: &Network) {
        self.slots().clear();
        let files = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        for file in files {
            let _ = net.ops().remove_netns(&file.path()).await;
        }
        for name in net.owners_starting(SLOT) {
            net.release(&name);
        }
    }
}

impl Network {
    /// Keeps the pool full until `shutdown`, then empties it; returns at once without
    /// a pool. Run once per agent.
    pub async fn keep_pool_filled(self, shutdown: CancellationToken) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        pool.take_over(&self).await;
        let mut pause = Duration::from_millis(200);
        loop {
            while pool.ready() < pool.size && !shutdown.is_cancelled() {
                match pool.make(&self).await {
                    Ok(()) => pause = Duration::from_millis(200),
                    Err(e) => {
                        // A full subnet or a kernel refusing: tasks still make their own.
                        tracing::warn!(error = %e, "could not prepare a network namespace");
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.cancelled() => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
            }
            tokio::select! {
                _ = pool.taken.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        pool.empty(&self).await;
    }
}
