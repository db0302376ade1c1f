//! The controller loop: changes → keyed queue → `reconcile(obj, ctx)`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_api::Resource;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::{Change, Reader};
use crate::informers::Informers;
use crate::queue::{Backoff, WorkQueue};

/// What to do after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long, even if nothing changes.
    Requeue(Duration),
    /// Nothing to do until the object (or something it watches) changes.
    AwaitChange,
    /// Retry with the controller's exponential backoff for this object.
    Backoff,
}

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }
    pub fn await_change() -> Self {
        Action::AwaitChange
    }
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// For logs and spans: `gc`, `service`.
    pub name: &'static str,
    /// Objects reconciled at once (never the same object twice).
    pub concurrency: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// After a pass over an object, the next one waits this long (or three times as long
    /// as the pass took, if longer): changes arriving meanwhile are coalesced into it.
    /// For controllers whose pass costs O(dependents).
    pub min_interval: Duration,
}

impl ControllerConfig {
    pub fn named(name: &'static str) -> Self {
        ControllerConfig {
            name,
            concurrency: 4,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            min_interval: Duration::ZERO,
        }
    }
}

pub struct Controller<K: Resource> {
    config: ControllerConfig,
    informers: Informers,
    queue: WorkQueue,
    reader: Reader<K>,
    /// Every cache this controller reads is loaded before the first reconcile.
    loaded: Vec<BoxFuture<'static, ()>>,
    secondary: Vec<Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>>,
}

impl<K: Resource> Controller<K> {
    /// A controller of `K`, reading the shared caches of `informers`.
    pub fn new(informers: &Informers, config: ControllerConfig) -> Self {
        let queue = WorkQueue::new();
        let reflector = informers.get::<K>();
        let q = queue.clone();
        reflector.on_change(move |c| match c {
            Change::Applied(k) | Change::Deleted(k) => q.add(k.name()),
        });
        let reader = reflector.reader();
        let r = reader.clone();
        Controller {
            config,
            informers: informers.clone(),
            queue,
            reader,
            loaded: vec![Box::pin(async move { r.wait_ready().await })],
            secondary: Vec::new(),
        }
    }

    /// The queue, for other sources of work (a raw store watch, a timer).
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Runs `f` beside the controller, until shutdown (another watch feeding the queue).
    pub fn with_background(
        mut self,
        f: impl FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send + 'static,
    ) -> Self {
        self.secondary.push(Box::new(f));
        self
    }

    /// The primary kind's cache, for reconcile contexts and mappers.
    pub fn reader(&self) -> Reader<K> {
        self.reader.clone()
    }

    /// Also reconciles the objects `map` names whenever an object of kind `C` changes
    /// (e.g. the owner of a Task that changed).
    pub fn watches<C: Resource>(
        self,
        map: impl Fn(&C) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.watches_changes(move |c: &Change<C>| {
            let (Change::Applied(obj) | Change::Deleted(obj)) = c;
            map(obj)
        })
    }

    /// As [`watches`](Self::watches), telling `map` whether the object changed or went
    /// away, for controllers that care only about one.
    pub fn watches_changes<C: Resource>(
        mut self,
        map: impl Fn(&Change<C>) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        let reflector = self.informers.get::<C>();
        let q = self.queue.clone();
        reflector.on_change(move |c| {
            for name in map(c) {
                q.add(&name);
            }
        });
        let reader = reflector.reader();
        self.loaded
            .push(Box::pin(async move { reader.wait_ready().await }));
        self
    }

    /// Runs until `shutdown`. `reconcile` sees the cached object; objects deleted before
    /// their turn are skipped. `error_policy` decides what a failure means.
    pub async fn run<Ctx, E, F, Fut, P>(
        self,
        reconcile: F,
        error_policy: P,
        ctx: Arc<Ctx>,
        shutdown: CancellationToken,
    ) where
        Ctx: Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
        F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action + Send + Sync + 'static,
    {
        let Controller {
            config,
            queue,
            reader,
            loaded,
            secondary,
            ..
        } = self;
        tracing::info!(
            controller = config.name,
            kind = K::KIND,
            "controller starting"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for s in secondary {
            tasks.spawn(s(shutdown.clone()));
        }
        tokio::select! {
            _ = futures::future::join_all(loaded) => {}
            _ = shutdown.cancelled() => return,
        }
        let reconcile = Arc::new(reconcile);
        let error_policy = Arc::new(error_policy);
        let backoff = Arc::new(Backoff::new(config.backoff_base, config.backoff_max));
        let last_run: Arc<
            std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
        > = Arc::default();
        let min_interval = config.min_interval;
        for _ in 0..config.concurrency.max(1) {
            let (queue, reader, ctx) = (queue.clone(), reader.clone(), ctx.clone());
            let (reconcile, error_policy, backoff) =
                (reconcile.clone(), error_policy.clone(), backoff.clone());
            let last_run = last_run.clone();
            let name = config.name;
            tasks.spawn(async move {
                while let Some(key) = queue.next().await {
                    let Some(obj) = reader.get(&key) else {
                        backoff.succeeded(&key);
                        last_run.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                        queue.done(&key);
                        continue;
                    };
                    if !min_interval.is_zero() {
                        let now = tokio::time::Instant::now();
                        let next = last_run.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
                        if let Some(next) = next.filter(|n| now < *n) {
                            queue.done(&key);
                            queue.add_after(&key, next - now);
                            continue;
                        }
                    }
                    let span = tracing::info_span!("reconcile", controller = name, kind = K::KIND, object = %key);
                    let started = tokio::time::Instant::now();
                    let result = reconcile(obj.clone(), ctx.clone()).instrument(span.clone()).await;
                    if !min_interval.is_zero() {
                        // The next pass waits at least three times as long as this one
                        // took, so an expensive pass (a 10,000-task service) never holds
                        // more than a quarter of a core while its tasks keep changing.
                        let took = started.elapsed();
                        let next = tokio::time::Instant::now() + min_interval.max(took * 3);
                        last_run.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), next);
                    }
                    let action = match result {
                        Ok(action) => {
                            backoff.succeeded(&key);
                            action
                        }
                        Err(e) => {
                            span.in_scope(|| tracing::warn!(error = %e, "reconcile failed"));
                            error_policy(obj, &e, ctx.clone())
                        }
                    };
                    queue.done(&key);
                    match action {
                        Action::AwaitChange => {}
                        Action::Requeue(after) => queue.add_after(&key, after),
                        Action::Backoff => queue.add_after(&key, backoff.failed(&key)),
                    }
                }
            });
        }
        shutdown.cancelled().await;
        queue.shut_down();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        tracing::info!(controller = config.name, "controller stopped");
    }
}
