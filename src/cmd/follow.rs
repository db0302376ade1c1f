//! A watch that survives the server going away: on a lost stream it reconnects with
//! back-off (saying so on stderr) and resumes after the last revision it saw, so
//! nothing is missed or printed twice. It gives up only when the server stays away
//! longer than `GIVE_UP_AFTER`. `get -w` and `events -w` follow through it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_wire::pb;
use tonic::Streaming;

use super::Context;

/// How long the server may be unreachable before a watch ends with an error.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

pub struct Resuming<'a> {
    ctx: &'a Context,
    request: pb::WatchRequest,
    stream: Option<Streaming<pb::WatchResponse>>,
    /// The newest revision received: a reconnect resumes after it.
    last: i64,
}

impl<'a> Resuming<'a> {
    /// Opens the watch; an unreachable server is an error at once (it was never there).
    pub async fn open(ctx: &'a Context, request: pb::WatchRequest) -> anyhow::Result<Self> {
        let stream = ctx
            .client()
            .await?
            .watch(request.clone())
            .await?
            .into_inner();
        Ok(Resuming {
            ctx,
            request,
            stream: Some(stream),
            last: 0,
        })
    }

    /// The next change, across reconnects.
    pub async fn next(&mut self) -> anyhow::Result<pb::WatchResponse> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match stream.next().await {
                Some(Ok(msg)) => {
                    self.last = self.last.max(msg.revision);
                    return Ok(msg);
                }
                Some(Err(status)) if self.compacted(&status) => self.stream = None,
                Some(Err(status)) if is_transient(&status) => {
                    eprintln!(
                        "shoal: the watch was interrupted ({}); reconnecting",
                        status.message()
                    );
                    self.stream = None;
                }
                Some(Err(status)) => return Err(status.into()),
                None => {
                    eprintln!("shoal: the server closed the watch; reconnecting");
                    self.stream = None;
                }
            }
        }
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            tokio::time::sleep(pause).await;
            let mut request = self.request.clone();
            if self.last > 0 {
                request.resource_version = self.last;
                request.send_initial = false;
            }
            let attempt = async {
                self.ctx
                    .client()
                    .await?
                    .watch(request)
                    .await
                    .map_err(anyhow::Error::from)
            };
            match attempt.await {
                Ok(stream) => {
                    eprintln!("shoal: watching again, after revision {}", self.last);
                    self.stream = Some(stream.into_inner());
                    return Ok(());
                }
                Err(e) => {
                    if let Some(status) = e.downcast_ref::<tonic::Status>() {
                        if self.compacted(status) {
                            continue;
                        }
                        if !is_transient(status) {
                            return Err(e);
                        }
                    }
                    if started.elapsed() >= GIVE_UP_AFTER {
                        anyhow::bail!(
                            "the server has been unreachable for {}s; giving up the watch: {e}",
                            GIVE_UP_AFTER.as_secs()
                        );
                    }
                }
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Whether the watch failed because the history after `last` is compacted; if so
    /// the next connection lists everything again.
    fn compacted(&mut self, status: &tonic::Status) -> bool {
        if status.code() != tonic::Code::OutOfRange || self.last == 0 {
            return false;
        }
        eprintln!("shoal: revision {} is compacted; listing again", self.last);
        self.last = 0;
        true
    }
}

/// Whether a watch ended because the connection did (the server restarting, a
/// network blip), rather than because the server refused it.
fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    )
}
