//! Which node certificates are in force: for each node, the serials of the certificates
//! the CA gave it (its current one and, across a renewal, the one before), kept in the
//! store so every server agrees. `shoal node rm` deletes a node's entry, and from then
//! on no certificate of that node is accepted by any server: revocation without a CRL
//! to publish, since only shoal's own servers ever check these certificates.
//!
//! Each server follows the entries, so checking a call costs no store read; a serial
//! not (yet) seen is looked up once in the store before it is refused, so a node that
//! just joined through another server is not turned away by a watch a moment behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shoal_reconcile::CancellationToken;
use shoal_store::objects::{Follower, Item, ObjectError, RecordChange};
use shoal_store::{ObjectStore, Revision};

const PREFIX: &str = "node-certs";
/// A renewed node may still hold connections made with its previous certificate.
const KEPT: usize = 2;

fn record(node: &str) -> String {
    format!("{PREFIX}/{node}")
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
struct Serials {
    serials: Vec<String>,
}

/// Which of a node's certificates a new one replaces.
#[derive(Debug, Clone, Copy)]
pub enum Replacing {
    /// A join: whatever the node had before is void.
    All,
    /// A renewal: the previous one stays good (connections made with it live on).
    AllButNewest,
}

pub struct NodeCerts {
    objects: ObjectStore,
    by_node: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Names of nodes as they are revoked, for the streams they hold open.
    revocations: tokio::sync::broadcast::Sender<String>,
}

struct Table {
    by_node: Arc<Mutex<HashMap<String, Vec<String>>>>,
    revocations: tokio::sync::broadcast::Sender<String>,
}

fn decode(bytes: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Serials>(bytes)
        .map(|s| s.serials)
        .unwrap_or_default()
}

impl Follower<Vec<u8>> for Table {
    fn listed(&mut self, items: Vec<Item<Vec<u8>>>, _revision: Revision) {
        let mut table = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        let listed: HashMap<String, Vec<String>> = items
            .into_iter()
            .map(|i| (i.name, decode(&i.value)))
            .collect();
        for gone in table.keys().filter(|n| !listed.contains_key(*n)) {
            let _ = self.revocations.send(gone.clone());
        }
        *table = listed;
    }
    fn applied(&mut self, item: Item<Vec<u8>>) {
        let mut table = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        table.insert(item.name, decode(&item.value));
    }
    fn deleted(&mut self, name: &str, _revision: Revision) {
        let mut table = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(name);
        let _ = self.revocations.send(name.to_string());
    }
}

impl NodeCerts {
    pub fn start(objects: ObjectStore, shutdown: CancellationToken) -> Arc<NodeCerts> {
        let by_node = Arc::new(Mutex::new(HashMap::new()));
        let (revocations, _) = tokio::sync::broadcast::channel(256);
        let mut table = Table {
            by_node: by_node.clone(),
            revocations: revocations.clone(),
        };
        let following = objects.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = following.follow_records(PREFIX, &mut table) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Arc::new(NodeCerts {
            objects,
            by_node,
            revocations,
        })
    }

    /// Completes when `node` is revoked (through any server): what its open streams
    /// end on.
    pub fn revoked(&self, node: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut revocations = self.revocations.subscribe();
        let node = node.to_string();
        async move {
            loop {
                match revocations.recv().await {
                    Ok(name) if name == node => return,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        }
    }

    fn seen(&self, node: &str, serial: &str) -> bool {
        let table = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(node)
            .is_some_and(|serials| serials.iter().any(|s| s == serial))
    }

    /// Whether `serial` is one of `node`'s certificates in force.
    pub async fn in_force(&self, node: &str, serial: &str) -> Result<bool, ObjectError> {
        if self.seen(node, serial) {
            return Ok(true);
        }
        let stored = self.objects.record(&record(node)).await?;
        let serials = stored.map(|(bytes, _)| decode(&bytes)).unwrap_or_default();
        let found = serials.iter().any(|s| s == serial);
        if found {
            let mut table = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
            table.insert(node.to_string(), serials);
        }
        Ok(found)
    }

    /// Records a certificate just given to `node`.
    pub async fn issued(
        &self,
        node: &str,
        serial: &str,
        replacing: Replacing,
    ) -> Result<(), ObjectError> {
        let serials = self
            .objects
            .modify_record(&record(node), |current| {
                let mut serials = match (replacing, current) {
                    (Replacing::AllButNewest, Some(bytes)) => decode(bytes),
                    _ => Vec::new(),
                };
                serials.retain(|s| s != serial);
                serials.push(serial.to_string());
                let excess = serials.len().saturating_sub(KEPT);
                serials.drain(..excess);
                let bytes = serde_json::to_vec(&Serials {
                    serials: serials.clone(),
                })
                .map_err(|e| ObjectError::Invalid(e.to_string()))?;
                Ok::<_, ObjectError>(RecordChange::Write(bytes, serials))
            })
            .await?;
        let mut table = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        table.insert(node.to_string(), serials);
        Ok(())
    }

    /// Revokes every certificate of `node`.
    pub async fn revoke(&self, node: &str) -> Result<(), ObjectError> {
        self.objects.delete_record(&record(node)).await?;
        let mut table = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(node);
        let _ = self.revocations.send(node.to_string());
        Ok(())
    }
}
