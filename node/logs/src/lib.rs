//! Log events as Fluentd has them, (tag, time, record), and the pipeline's parts that
//! only compute, each a pure function of its input and property-tested against
//! arbitrary bytes where the input comes from outside: the framing of MessagePack
//! values on a stream (`frame.rs`), the Fluentd forward protocol v1 (`forward.rs`),
//! the HTTP input's requests (`http_in.rs`), parsers of lines into records (`parse/`), filters
//! (`filter.rs`), routing by tag (`route.rs`), formatters (`format.rs`), the retry
//! policy and an output's health (`retry.rs`), the bodies and answers of Loki and
//! Elasticsearch (`sink.rs`), and task logs as events (`task_log.rs`: json-file
//! lines). Tag patterns and tag templates are what manifests write, so they are
//! `shoal-api`'s (`shoal_api::tag`), checked when a LogPipeline is applied. Two parts touch the disk, because "nothing acknowledged is
//! lost" is decided there: an output's file buffer (`buffer.rs`) and the tail
//! input's files and positions (`tail.rs`). Sockets, timers and processes belong to
//! the pipeline that uses this crate (`shoal-pipeline`).

pub mod buffer;
pub mod event;
pub mod filter;
pub mod format;
pub mod forward;
pub mod frame;
pub mod glob;
pub mod http_in;
pub mod parse;
pub mod retry;
pub mod route;
pub mod sink;
pub mod tail;
pub mod task_log;

pub use event::{Event, EventTime};
/// Tag patterns and templates are the manifest's grammar: `shoal-api` has them.
pub use shoal_api::tag;
pub use shoal_api::tag::TagPattern;
