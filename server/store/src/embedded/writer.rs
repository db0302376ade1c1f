//! The single writer: one thread that owns every write to the database.
//!
//! Writes queue up while a commit is being fsynced and are then committed together
//! (group commit), so throughput grows with concurrency while each acknowledged write is
//! durable. Each write still gets its own revision, in queue order, and one log entry
//! that watchers read. The thread also owns lease deadlines, so expiry is just another
//! write.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{ReadableTable, Table};
use tokio::sync::oneshot;

use super::db::Db;
use super::records::{decode_kv, encode_event, encode_kv};
use super::{backend_err, Shared, KV, LEASES, LOG, META};
use crate::{BatchOp, EventType, KeyValue, LeaseId, Revision, StoreError, WatchEvent};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// The most history kept for watchers, whatever the server's retention: past it, the
/// older half of the log is compacted at once.
const LOG_RETAIN: i64 = 100_000;

pub enum Op {
    /// A create, compare-and-update or compare-and-delete, exactly as a batch carries it.
    Write(BatchOp),
    /// Several writes, all or none.
    Transact(Vec<BatchOp>),
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Rename {
        from: String,
        expected: Revision,
        to: String,
        value: Vec<u8>,
    },
    GrantLease {
        ttl: Duration,
    },
    KeepAlive {
        lease: LeaseId,
    },
    RevokeLease {
        lease: LeaseId,
    },
    Compact {
        revision: Revision,
    },
}

pub struct Request {
    pub op: Op,
    /// A revision for key writes, the lease id for grants.
    pub reply: oneshot::Sender<Result<i64, StoreError>>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

pub struct Writer {
    db: Arc<Db>,
    /// The database file, whose size says when compacting it is worth it.
    path: PathBuf,
    shared: Arc<Shared>,
    revision: Revision,
    compacted: Revision,
    next_lease: LeaseId,
    leases: HashMap<LeaseId, Lease>,
}

struct Tables<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    log: Table<'t, i64, &'static [u8]>,
    leases: Table<'t, i64, u64>,
}

impl Writer {
    /// Loads revision, compaction point and leases. Leases restart their TTL, as etcd's
    /// do after a leader change: a restart never expires a lease early.
    pub fn load(db: Arc<Db>, shared: Arc<Shared>, path: PathBuf) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META).map_err(backend_err)?;
        let get = |k: &str| -> Result<i64, StoreError> {
            Ok(meta
                .get(k)
                .map_err(backend_err)?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let revision = get("revision")?;
        let compacted = get("compacted")?;
        let next_lease = get("next_lease")?.max(1);
        let mut leases = HashMap::new();
        let now = Instant::now();
        for entry in txn
            .open_table(LEASES)
            .map_err(backend_err)?
            .iter()
            .map_err(backend_err)?
        {
            let (id, ttl_ms) = entry.map_err(backend_err)?;
            let ttl = Duration::from_millis(ttl_ms.value());
            leases.insert(
                id.value(),
                Lease {
                    ttl,
                    deadline: now + ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        for entry in txn
            .open_table(KV)
            .map_err(backend_err)?
            .iter()
            .map_err(backend_err)?
        {
            let (k, v) = entry.map_err(backend_err)?;
            let kv = decode_kv(k.value(), v.value())?;
            if let Some(l) = leases.get_mut(&kv.lease) {
                l.keys.insert(kv.key);
            }
        }
        shared.revision.store(revision, Ordering::SeqCst);
        shared.compacted.store(compacted, Ordering::SeqCst);
        Ok(Writer {
            db,
            path,
            shared,
            revision,
            compacted,
            next_lease,
            leases,
        })
    }

    pub fn run(mut self, rx: Receiver<Request>) {
        loop {
            let wait = self
                .leases
                .values()
                .map(|l| l.deadline.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(req) => batch.push(req),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            let expired: Vec<LeaseId> = self
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            if batch.is_empty() && expired.is_empty() {
                continue;
            }
            self.commit(batch, expired);
        }
    }

    fn commit(&mut self, batch: Vec<Request>, expired: Vec<LeaseId>) {
        let start_revision = self.revision;
        let start_compacted = self.compacted;
        let start_next_lease = self.next_lease;
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut lease_changes = Vec::new();
        let outcome = (|| -> Result<(), StoreError> {
            let txn = self.db.begin_write()?;
            {
                let mut t = Tables {
                    kv: txn.open_table(KV).map_err(backend_err)?,
                    log: txn.open_table(LOG).map_err(backend_err)?,
                    leases: txn.open_table(LEASES).map_err(backend_err)?,
                };
                for lease in &expired {
                    self.drop_lease(&mut t, *lease, &mut events, &mut lease_changes)?;
                }
                for req in &batch {
                    let r = self.apply(&mut t, &req.op, &mut events, &mut lease_changes);
                    if let Err(StoreError::Backend(e)) = &r {
                        return Err(StoreError::Backend(e.clone()));
                    }
                    results.push(r);
                }
                if self.revision - self.compacted > LOG_RETAIN {
                    self.compact_log(&mut t, self.revision - LOG_RETAIN / 2)?;
                }
                let mut meta = txn.open_table(META).map_err(backend_err)?;
                meta.insert("revision", self.revision)
                    .map_err(backend_err)?;
                meta.insert("compacted", self.compacted)
                    .map_err(backend_err)?;
                meta.insert("next_lease", self.next_lease)
                    .map_err(backend_err)?;
            }
            txn.commit().map_err(backend_err)
        })();
        match outcome {
            Ok(()) => {
                self.shared
                    .compacted
                    .store(self.compacted, Ordering::SeqCst);
                self.shared.revision.store(self.revision, Ordering::SeqCst);
                for ev in events {
                    // No receivers is fine: nobody is watching.
                    let _ = self.shared.events.send(Arc::new(ev));
                }
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
                if self.compacted > start_compacted {
                    self.compact_file();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store commit failed");
                // Undo the in-memory effects of a transaction that never happened.
                self.revision = start_revision;
                self.compacted = start_compacted;
                self.next_lease = start_next_lease;
                for change in lease_changes.into_iter().rev() {
                    change.undo(&mut self.leases);
                }
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn apply(
        &mut self,
        t: &mut Tables<'_>,
        op: &Op,
        events: &mut Vec<WatchEvent>,
        changes: &mut Vec<LeaseChange>,
    ) -> Result<i64, StoreError> {
        match op {
            Op::Write(op) => {
                let current = self.precondition(t, op)?;
                self.write(t, op, current, events, changes)
            }
            Op::Transact(ops) => {
                // Every precondition before the first change: the whole list or nothing.
                BatchOp::check_distinct(ops)?;
                let checked = ops
                    .iter()
                    .map(|op| self.precondition(t, op))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut rev = self.revision;
                for (op, current) in ops.iter().zip(checked) {
                    rev = self.write(t, op, current, events, changes)?;
                }
                Ok(rev)
            }
            Op::Delete { key, expected } => {
                let current = self.current(t, key)?;
                if let Some(expected) = expected {
                    if current.mod_revision != *expected {
                        return Err(StoreError::Conflict {
                            key: key.clone(),
                            expected: *expected,
                            current: current.mod_revision,
                        });
                    }
                }
                self.remove(t, current, events, changes)
            }
            Op::Rename {
                from,
                expected,
                to,
                value,
            } => {
                // Every precondition before the first change: one op is all or nothing.
                let current = self.current(t, from)?;
                if current.mod_revision != *expected {
                    return Err(StoreError::Conflict {
                        key: from.clone(),
                        expected: *expected,
                        current: current.mod_revision,
                    });
                }
                if t.kv.get(to.as_str()).map_err(backend_err)?.is_some() {
                    return Err(StoreError::AlreadyExists { key: to.clone() });
                }
                let rev = self.put(t, to, value, None, None, events, changes)?;
                self.remove(t, current, events, changes)?;
                Ok(rev)
            }
            Op::GrantLease { ttl } => {
                let id = self.next_lease;
                self.next_lease += 1;
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                t.leases.insert(id, ttl_ms).map_err(backend_err)?;
                self.leases.insert(
                    id,
                    Lease {
                        ttl: *ttl,
                        deadline: Instant::now() + *ttl,
                        keys: BTreeSet::new(),
                    },
                );
                changes.push(LeaseChange::Granted(id));
                Ok(id)
            }
            Op::KeepAlive { lease } => {
                let l = self
                    .leases
                    .get_mut(lease)
                    .ok_or(StoreError::LeaseNotFound(*lease))?;
                l.deadline = Instant::now() + l.ttl;
                Ok(*lease)
            }
            Op::RevokeLease { lease } => {
                if !self.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
                self.drop_lease(t, *lease, events, changes)?;
                Ok(self.revision)
            }
            Op::Compact { revision } => {
                if *revision > self.revision {
                    return Err(StoreError::Invalid(format!(
                        "cannot compact to {revision}: the store is at {}",
                        self.revision
                    )));
                }
                if *revision > self.compacted {
                    self.compact_log(t, *revision)?;
                }
                Ok(self.compacted)
            }
        }
    }

    /// Checks `op`'s precondition (and lease): the key's current value when it holds.
    fn precondition(&self, t: &Tables<'_>, op: &BatchOp) -> Result<Option<KeyValue>, StoreError> {
        let (key, expected, lease) = match op {
            BatchOp::Create { key, lease, .. } => {
                if t.kv.get(key.as_str()).map_err(backend_err)?.is_some() {
                    return Err(StoreError::AlreadyExists { key: key.clone() });
                }
                self.check_lease(*lease)?;
                return Ok(None);
            }
            BatchOp::Update {
                key,
                expected,
                lease,
                ..
            } => (key, *expected, *lease),
            BatchOp::Delete { key, expected } => (key, *expected, None),
        };
        let current = self.current(t, key)?;
        if current.mod_revision != expected {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                current: current.mod_revision,
            });
        }
        self.check_lease(lease)?;
        Ok(Some(current))
    }

    /// Carries out `op` whose precondition held, `current` being what it found.
    fn write(
        &mut self,
        t: &mut Tables<'_>,
        op: &BatchOp,
        current: Option<KeyValue>,
        events: &mut Vec<WatchEvent>,
        changes: &mut Vec<LeaseChange>,
    ) -> Result<i64, StoreError> {
        match op {
            BatchOp::Create { key, value, lease }
            | BatchOp::Update {
                key, value, lease, ..
            } => self.put(t, key, value, current, *lease, events, changes),
            BatchOp::Delete { key, .. } => match current {
                Some(current) => self.remove(t, current, events, changes),
                None => Err(StoreError::NotFound { key: key.clone() }),
            },
        }
    }

    fn current(&self, t: &Tables<'_>, key: &str) -> Result<KeyValue, StoreError> {
        match t.kv.get(key).map_err(backend_err)? {
            Some(v) => decode_kv(key, v.value()),
            None => Err(StoreError::NotFound {
                key: key.to_string(),
            }),
        }
    }

    fn check_lease(&self, lease: Option<LeaseId>) -> Result<(), StoreError> {
        match lease {
            Some(id) if !self.leases.contains_key(&id) => Err(StoreError::LeaseNotFound(id)),
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        t: &mut Tables<'_>,
        key: &str,
        value: &[u8],
        prev: Option<KeyValue>,
        lease: Option<LeaseId>,
        events: &mut Vec<WatchEvent>,
        changes: &mut Vec<LeaseChange>,
    ) -> Result<i64, StoreError> {
        self.revision += 1;
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: lease.unwrap_or(0),
        };
        t.kv.insert(key, encode_kv(&kv).as_slice())
            .map_err(backend_err)?;
        if let Some(p) = &prev {
            if p.lease != kv.lease {
                self.detach(p.lease, key, changes);
            }
        }
        if let Some(l) = lease.and_then(|id| self.leases.get_mut(&id)) {
            if l.keys.insert(key.to_string()) {
                changes.push(LeaseChange::Attached(kv.lease, key.to_string()));
            }
        }
        let ev = WatchEvent {
            event_type: EventType::Put,
            kv,
            prev,
        };
        t.log
            .insert(self.revision, encode_event(&ev).as_slice())
            .map_err(backend_err)?;
        events.push(ev);
        Ok(self.revision)
    }

    fn remove(
        &mut self,
        t: &mut Tables<'_>,
        current: KeyValue,
        events: &mut Vec<WatchEvent>,
        changes: &mut Vec<LeaseChange>,
    ) -> Result<i64, StoreError> {
        self.revision += 1;
        t.kv.remove(current.key.as_str()).map_err(backend_err)?;
        self.detach(current.lease, &current.key, changes);
        let ev = WatchEvent {
            event_type: EventType::Delete,
            kv: KeyValue {
                key: current.key.clone(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: self.revision,
                version: 0,
                lease: 0,
            },
            prev: Some(current),
        };
        t.log
            .insert(self.revision, encode_event(&ev).as_slice())
            .map_err(backend_err)?;
        events.push(ev);
        Ok(self.revision)
    }

    fn detach(&mut self, lease: LeaseId, key: &str, changes: &mut Vec<LeaseChange>) {
        if let Some(l) = self.leases.get_mut(&lease) {
            if l.keys.remove(key) {
                changes.push(LeaseChange::Detached(lease, key.to_string()));
            }
        }
    }

    fn drop_lease(
        &mut self,
        t: &mut Tables<'_>,
        id: LeaseId,
        events: &mut Vec<WatchEvent>,
        changes: &mut Vec<LeaseChange>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = self
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            if let Ok(current) = self.current(t, &key) {
                self.remove(t, current, events, changes)?;
            }
        }
        t.leases.remove(id).map_err(backend_err)?;
        if let Some(lease) = self.leases.remove(&id) {
            changes.push(LeaseChange::Dropped(id, lease.ttl));
        }
        Ok(())
    }

    /// After history was dropped: gives the file's free pages back to the file system
    /// when they are most of it.
    fn compact_file(&self) {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return;
        };
        let started = Instant::now();
        match self.db.compact_file(meta.len()) {
            Ok(true) => {
                let now = std::fs::metadata(&self.path).map_or(0, |m| m.len());
                tracing::info!(
                    before = meta.len(),
                    after = now,
                    took_ms = started.elapsed().as_millis() as u64,
                    "embedded store file compacted"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot compact the embedded store file"),
        }
    }

    fn compact_log(&mut self, t: &mut Tables<'_>, revision: Revision) -> Result<(), StoreError> {
        t.log
            .retain_in(..revision, |_, _| false)
            .map_err(backend_err)?;
        self.compacted = revision;
        Ok(())
    }
}

/// In-memory lease bookkeeping done inside a transaction, undone if the commit fails.
enum LeaseChange {
    Granted(LeaseId),
    Dropped(LeaseId, Duration),
    Attached(LeaseId, String),
    Detached(LeaseId, String),
}

impl LeaseChange {
    fn undo(self, leases: &mut HashMap<LeaseId, Lease>) {
        match self {
            LeaseChange::Granted(id) => {
                leases.remove(&id);
            }
            LeaseChange::Dropped(id, ttl) => {
                leases.insert(
                    id,
                    Lease {
                        ttl,
                        deadline: Instant::now() + ttl,
                        keys: BTreeSet::new(),
                    },
                );
            }
            LeaseChange::Attached(id, key) => {
                if let Some(l) = leases.get_mut(&id) {
                    l.keys.remove(&key);
                }
            }
            LeaseChange::Detached(id, key) => {
                if let Some(l) = leases.get_mut(&id) {
                    l.keys.insert(key);
                }
            }
        }
    }
}
