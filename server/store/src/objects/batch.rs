//! Many writes at once, grouped into batches the store can commit together: the
//! scheduler binding hundreds of tasks, the service controller creating them.

use futures::StreamExt;
use shoal_api::Resource;

use super::codec::encode_typed;
use super::keys::object_key;
use super::rules::stamp_new;
use super::{ObjectError, ObjectStore, Result};
use crate::BatchOp;

/// What a batch op is swapped for once it has been handed to the store.
fn placeholder() -> BatchOp {
    BatchOp::Create {
        key: String::new(),
        value: Vec::new(),
        lease: None,
    }
}

impl ObjectStore {
    /// Creates many objects (as `create` does), in batches the store can group into
    /// one transaction. Each gets its own outcome.
    pub async fn create_many<R: Resource>(&self, objs: Vec<R>) -> Vec<Result<R>> {
        let kind = shoal_api::kind_of::<R>();
        let mut prepared = Vec::with_capacity(objs.len());
        for mut obj in objs {
            stamp_new(obj.metadata_mut());
            let op = encode_typed(&mut obj).map(|value| BatchOp::Create {
                key: object_key(kind, obj.name()),
                value,
                lease: None,
            });
            prepared.push((obj, op));
        }
        self.run_batch(prepared).await
    }

    /// Writes many objects exactly as given, each at its `resourceVersion`, without
    /// reading first: for controllers holding a fresh copy that change spec and status
    /// together (the scheduler binding tasks). `spec_changed` bumps the generation.
    pub async fn put_many<R: Resource>(&self, objs: Vec<R>, spec_changed: bool) -> Vec<Result<R>> {
        let kind = shoal_api::kind_of::<R>();
        let mut prepared = Vec::with_capacity(objs.len());
        for mut obj in objs {
            let meta = obj.metadata_mut();
            if spec_changed {
                meta.generation = Some(meta.generation.unwrap_or(0) + 1);
            }
            let expected = meta.revision().ok_or_else(|| {
                ObjectError::Invalid(format!(
                    "{}/{}: put needs a resourceVersion",
                    R::KIND,
                    meta.name
                ))
            });
            let op = expected.and_then(|expected| {
                Ok(BatchOp::Update {
                    key: object_key(kind, obj.name()),
                    value: encode_typed(&mut obj)?,
                    expected,
                    lease: None,
                })
            });
            prepared.push((obj, op));
        }
        self.run_batch(prepared).await
    }

    async fn run_batch<R: Resource>(&self, prepared: Vec<(R, Result<BatchOp>)>) -> Vec<Result<R>> {
        const CHUNK: usize = 100;
        let mut out: Vec<Result<R>> = Vec::with_capacity(prepared.len());
        let mut pending: Vec<(usize, R, BatchOp)> = Vec::new();
        for (obj, op) in prepared {
            match op {
                Ok(op) => {
                    pending.push((out.len(), obj, op));
                    out.push(Err(ObjectError::Invalid("not written".into())));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        // Several batches in flight: etcd pipelines them, the embedded writer groups them.
        let mut chunks: Vec<Vec<(usize, R, BatchOp)>> = Vec::new();
        let mut rest = pending.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(rest.by_ref().take(CHUNK).collect());
        }
        let results: Vec<_> = futures::stream::iter(chunks)
            .map(|mut chunk| {
                let store = self.store.clone();
                async move {
                    let ops: Vec<BatchOp> = chunk
                        .iter_mut()
                        .map(|(_, _, op)| std::mem::replace(op, placeholder()))
                        .collect();
                    let result = store.batch(ops).await;
                    (chunk, result)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (chunk, result) in results {
            match result {
                Ok(results) => {
                    for ((i, mut obj, _), r) in chunk.into_iter().zip(results) {
                        out[i] = match r {
                            Ok(rev) => {
                                obj.metadata_mut().resource_version = Some(rev.to_string());
                                Ok(obj)
                            }
                            Err(e) => Err(self.map_err(e, R::KIND, obj.name())),
                        };
                    }
                }
                Err(e) => {
                    for (i, _, _) in chunk {
                        out[i] = Err(ObjectError::Store(e.clone()));
                    }
                }
            }
        }
        out
    }
}
