//! The etcd backend: every Store operation is one etcd request (a transaction where a
//! comparison is needed), so etcd's own guarantees carry over unchanged.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, EventType as EtcdEventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    EventType, KeyValue, LeaseId, ListResult, Result, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};

/// etcd's default limit on operations in one transaction is 128.
const MAX_TXN_OPS: usize = 100;
/// etcd refuses a request over `--max-request-bytes` (1.5 MiB by default); several
/// writes share a transaction only up to this much, leaving room for the rest of the
/// request. One write alone may be larger (an object is at most 1.5 MiB).
const MAX_TXN_BYTES: usize = 1 << 20;

/// Keys per page when listing.
const LIST_PAGE: i64 = 500;
/// Largest response accepted: a page of 500 objects, each up to etcd's 1.5 MiB.
const MAX_RESPONSE: usize = 1 << 30;

/// The end of the key range a prefix covers (etcd's range_end).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub struct EtcdStore {
    client: Client,
    /// Leases (leadership, node heartbeats) on a connection of their own: on a shared
    /// HTTP/2 connection a keep-alive waits behind bulk traffic (watches that fall
    /// behind hold the connection's flow-control window), and a late renewal costs a
    /// leadership or a node.
    leases: Client,
}

fn etcd_err(e: etcd_client::Error) -> StoreError {
    match e {
        etcd_client::Error::GRpcStatus(s)
            if s.message().contains("required revision has been compacted") =>
        {
            StoreError::Compacted {
                compact_revision: 0,
            }
        }
        etcd_client::Error::GRpcStatus(s) if s.message().contains("requested lease not found") => {
            StoreError::LeaseNotFound(0)
        }
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            StoreError::LeaseNotFound(0)
        }
        etcd_client::Error::TransportError(t) => StoreError::Unavailable(t.to_string()),
        etcd_client::Error::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) =>
        {
            StoreError::Unavailable(s.message().to_string())
        }
        other => StoreError::Backend(other.to_string()),
    }
}

/// Whether a request failed before it left: its connection to the member the client
/// picked could not be made (a member that is down). Sending it again is safe, even
/// a write, and the client balances it over the endpoints, so the next pick may be
/// a live member: etcd's own client retries these the same way.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::TransportError(t) => format!("{t:?}"),
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable => {
            s.message().to_string()
        }
        _ => return false,
    };
    text.contains("tcp connect error") || text.contains("Connection refused")
}

/// `call`, again while it fails without having been sent, for up to ~2 s.
async fn again<T, F, Fut>(mut call: F) -> std::result::Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    for attempt in 0..20u64 {
        match call().await {
            Err(e) if never_sent(&e) => {
                tokio::time::sleep(Duration::from_millis(10 * (attempt + 1).min(20))).await
            }
            other => return other,
        }
    }
    call().await
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|_| StoreError::Backend("non-UTF-8 key in etcd".into()))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    })
}

impl EtcdStore {
    /// Connects to the given endpoints (`http://host:port`). Fails fast when etcd does
    /// not answer, so `shoal server --store` reports a wrong address at once.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let unavailable = |e: etcd_client::Error| {
            StoreError::Unavailable(format!("etcd at {}: {e}", endpoints.join(",")))
        };
        let mut client = Client::connect(endpoints, Some(options.clone()))
            .await
            .map_err(unavailable)?;
        client.status().await.map_err(unavailable)?;
        let leases = Client::connect(endpoints, Some(options))
            .await
            .map_err(unavailable)?;
        Ok(EtcdStore { client, leases })
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// A transaction, sent again while its connection cannot be made (see [`again`]).
    async fn txn(
        &self,
        txn: Txn,
    ) -> std::result::Result<etcd_client::TxnResponse, etcd_client::Error> {
        again(|| {
            let (mut client, txn) = (self.client(), txn.clone());
            async move { client.txn(txn).await }
        })
        .await
    }

    async fn watch_prefix(&self, prefix: &str, from: Revision, prev: bool) -> Result<WatchStream> {
        let mut options = WatchOptions::new().with_prefix();
        if prev {
            options = options.with_prev_key();
        }
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let mut stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE)
            .watch(prefix, Some(options))
            .await
            .map_err(etcd_err)?;
        // The first response confirms creation or reports compaction.
        let first = stream.message().await.map_err(etcd_err)?;
        if let Some(r) = &first {
            if r.compact_revision() > 0 || r.canceled() {
                return Err(StoreError::Compacted {
                    compact_revision: r.compact_revision(),
                });
            }
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut pending = first;
            loop {
                let resp = match pending.take() {
                    Some(r) => r,
                    None => match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            let _ = tx
                                .send(Err(StoreError::Unavailable("etcd watch ended".into())))
                                .await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(etcd_err(e))).await;
                            return;
                        }
                    },
                };
                if resp.compact_revision() > 0 {
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            compact_revision: resp.compact_revision(),
                        }))
                        .await;
                    return;
                }
                for ev in resp.events() {
                    let converted = convert_event(ev);
                    if tx.send(converted).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx).boxed())
    }

    /// Runs `op` if `compare` holds. When it does not, the error carries the key's
    /// current mod_revision (None: the key does not exist), for the caller to name.
    async fn guarded(
        &self,
        key: &str,
        compare: Compare,
        op: TxnOp,
    ) -> Result<std::result::Result<Revision, Option<Revision>>> {
        let txn = Txn::new()
            .when([compare])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await.map_err(etcd_err)?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        Ok(Err(read_revisions(&resp).into_iter().next().flatten()))
    }
}

fn put_options(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|l| PutOptions::new().with_lease(l))
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = again(|| {
            let mut client = self.client();
            async move { client.get(key, None).await }
        })
        .await
        .map_err(etcd_err)?;
        resp.kvs().first().map(to_kv).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<ListResult> {
        // Paged, all pages read at the first page's revision: one consistent snapshot
        // without any single response growing past gRPC's message limits.
        let end = prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        let mut items = Vec::new();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let resp = again(|| {
                let mut kv = self
                    .client
                    .kv_client()
                    .max_decoding_message_size(MAX_RESPONSE);
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await
            .map_err(etcd_err)?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in resp.kvs() {
                items.push(to_kv(kv)?);
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(ListResult { items, revision })
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision> {
        let compare = Compare::create_revision(key, CompareOp::Equal, 0);
        let op = TxnOp::put(key, value, put_options(lease));
        match self
            .guarded(key, compare, op)
            .await
            .map_err(|e| lease_error(e, lease))?
        {
            Ok(rev) => Ok(rev),
            Err(_) => Err(StoreError::AlreadyExists { key: key.into() }),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Revision> {
        let compare = Compare::mod_revision(key, CompareOp::Equal, expected);
        let op = TxnOp::put(key, value, put_options(lease));
        let outcome = self
            .guarded(key, compare, op)
            .await
            .map_err(|e| lease_error(e, lease))?;
        outcome.map_err(|current| mismatch(key, expected, current))
    }

    async fn batch(&self, ops: Vec<crate::BatchOp>) -> Result<Vec<Result<Revision>>> {
        let mut out: Vec<Option<Result<Revision>>> = vec![None; ops.len()];
        let mut todo: Vec<usize> = (0..ops.len()).collect();
        // One transaction (etcd allows 128 operations). When a compare fails, the same
        // round trip reads every key, so the ops that lost a race get their answer and
        // the rest go again in a second transaction rather than one by one.
        for _ in 0..2 {
            if todo.is_empty() || todo.len() > MAX_TXN_OPS {
                break;
            }
            let (compares, puts): (Vec<Compare>, Vec<TxnOp>) =
                todo.iter().map(|&i| guarded_write(&ops[i])).unzip();
            let reads: Vec<TxnOp> = todo
                .iter()
                .map(|&i| TxnOp::get(ops[i].key(), None))
                .collect();
            let txn = Txn::new().when(compares).and_then(puts).or_else(reads);
            let resp = match self.txn(txn).await {
                Ok(r) => r,
                // A lease or size problem: the one-by-one path reports it per op.
                Err(e) => {
                    tracing::debug!(error = %e, "batch transaction failed; writing one by one");
                    break;
                }
            };
            if resp.succeeded() {
                let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                for i in todo.drain(..) {
                    out[i] = Some(Ok(revision));
                }
                break;
            }
            let current = read_revisions(&resp);
            let mut again = Vec::new();
            for (&i, current) in todo.iter().zip(current) {
                match compare_fails(&ops[i], current) {
                    Some(e) => out[i] = Some(Err(e)),
                    None => again.push(i),
                }
            }
            todo = again;
        }
        // Whatever is left (a transaction error, or a second lost race) one by one.
        let rest: Vec<crate::BatchOp> = todo.iter().map(|&i| ops[i].clone()).collect();
        let results = futures::future::join_all(rest.into_iter().map(|op| self.apply_op(op))).await;
        for (i, r) in todo.into_iter().zip(results) {
            out[i] = Some(r);
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Backend("batch op not written".into()))))
            .collect())
    }

    async fn transact(&self, ops: Vec<crate::BatchOp>) -> Result<Vec<Revision>> {
        if ops.len() > MAX_TXN_OPS {
            return Err(StoreError::Invalid(format!(
                "{} writes in one transaction; etcd takes at most {MAX_TXN_OPS}",
                ops.len()
            )));
        }
        crate::BatchOp::check_distinct(&ops)?;
        let (compares, writes): (Vec<Compare>, Vec<TxnOp>) = ops.iter().map(guarded_write).unzip();
        let reads: Vec<TxnOp> = ops.iter().map(|op| TxnOp::get(op.key(), None)).collect();
        let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
        let resp = self.txn(txn).await.map_err(etcd_err)?;
        if resp.succeeded() {
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            return Ok(vec![revision; ops.len()]);
        }
        Err(ops
            .iter()
            .zip(read_revisions(&resp))
            .find_map(|(op, current)| compare_fails(op, current))
            .unwrap_or_else(|| {
                StoreError::Backend(
                    "a transaction compare failed, yet none fails on reading".into(),
                )
            }))
    }

    fn txn_limit(&self) -> crate::TxnLimit {
        crate::TxnLimit {
            ops: MAX_TXN_OPS,
            bytes: MAX_TXN_BYTES,
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision> {
        let compare = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let outcome = self.guarded(key, compare, TxnOp::delete(key, None)).await?;
        outcome.map_err(|current| mismatch(key, expected.unwrap_or(0), current))
    }

    async fn rename(
        &self,
        from: &str,
        expected: Revision,
        to: &str,
        value: Vec<u8>,
    ) -> Result<Revision> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(from, CompareOp::Equal, expected),
                Compare::create_revision(to, CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(to, value, None), TxnOp::delete(from, None)])
            .or_else([TxnOp::get(from, None), TxnOp::get(to, None)]);
        let resp = self.txn(txn).await.map_err(etcd_err)?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or(0));
        }
        let found = read_revisions(&resp);
        match (
            found.first().copied().flatten(),
            found.get(1).copied().flatten(),
        ) {
            (Some(current), _) if current != expected => {
                Err(mismatch(from, expected, Some(current)))
            }
            (None, _) => Err(mismatch(from, expected, None)),
            _ => Err(StoreError::AlreadyExists { key: to.into() }),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.watch_prefix(prefix, from, true).await
    }

    async fn watch_without_prev(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.watch_prefix(prefix, from, false).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = again(|| {
            let mut leases = self.leases.clone();
            async move { leases.lease_grant(secs, None).await }
        })
        .await
        .map_err(etcd_err)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let (mut keeper, mut stream) = again(|| {
            let mut leases = self.leases.clone();
            async move { leases.lease_keep_alive(lease).await }
        })
        .await
        .map_err(etcd_err)?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| lease_error(etcd_err(e), Some(lease)))?;
        match stream
            .message()
            .await
            .map_err(|e| lease_error(etcd_err(e), Some(lease)))?
        {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.leases
            .clone()
            .lease_revoke(lease)
            .await
            .map(|_| ())
            .map_err(|e| lease_error(etcd_err(e), Some(lease)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.client().compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(e) => match etcd_err(e) {
                // Compacting to an already compacted revision is a no-op, as in the embedded store.
                StoreError::Compacted { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn revision(&self) -> Result<Revision> {
        let resp = self
            .client()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd_err)?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}

/// What each read of a failed transaction's else-branch found, in order: the key's
/// mod_revision, or None where it is absent.
fn read_revisions(resp: &etcd_client::TxnResponse) -> Vec<Option<Revision>> {
    resp.op_responses()
        .into_iter()
        .map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        })
        .collect()
}

/// The compare and the write a batch operation stands for.
fn guarded_write(op: &crate::BatchOp) -> (Compare, TxnOp) {
    match op {
        crate::BatchOp::Create { key, value, lease } => (
            Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            TxnOp::put(key.as_str(), value.clone(), put_options(*lease)),
        ),
        crate::BatchOp::Update {
            key,
            value,
            expected,
            lease,
        } => (
            Compare::mod_revision(key.as_str(), CompareOp::Equal, *expected),
            TxnOp::put(key.as_str(), value.clone(), put_options(*lease)),
        ),
        crate::BatchOp::Delete { key, expected } => (
            Compare::mod_revision(key.as_str(), CompareOp::Equal, *expected),
            TxnOp::delete(key.as_str(), None),
        ),
    }
}

/// Why `op`'s compare fails when its key is at `current` (None: absent); None when
/// it holds.
fn compare_fails(op: &crate::BatchOp, current: Option<Revision>) -> Option<StoreError> {
    match (op, current) {
        (crate::BatchOp::Create { .. }, None) => None,
        (crate::BatchOp::Create { key, .. }, Some(_)) => {
            Some(StoreError::AlreadyExists { key: key.clone() })
        }
        (
            crate::BatchOp::Update { expected, .. } | crate::BatchOp::Delete { expected, .. },
            Some(c),
        ) if c == *expected => None,
        (
            crate::BatchOp::Update { key, expected, .. } | crate::BatchOp::Delete { key, expected },
            current,
        ) => Some(mismatch(key, *expected, current)),
    }
}

/// Why a compare on `key` failed: it is gone, or it moved on from `expected`.
fn mismatch(key: &str, expected: Revision, current: Option<Revision>) -> StoreError {
    match current {
        None => StoreError::NotFound { key: key.into() },
        Some(current) => StoreError::Conflict {
            key: key.into(),
            expected,
            current,
        },
    }
}

fn lease_error(e: StoreError, lease: Option<LeaseId>) -> StoreError {
    match e {
        StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease.unwrap_or(0)),
        other => other,
    }
}

fn convert_event(ev: &etcd_client::Event) -> Result<WatchEvent> {
    let kv = ev
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd event without a key".into()))?;
    Ok(WatchEvent {
        event_type: match ev.event_type() {
            EtcdEventType::Put => EventType::Put,
            EtcdEventType::Delete => EventType::Delete,
        },
        kv: to_kv(kv)?,
        prev: ev.prev_kv().map(to_kv).transpose()?,
    })
}
