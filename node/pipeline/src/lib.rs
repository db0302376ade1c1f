//! The log pipeline at work: events from inputs go through the filters and the
//! routes into each output's file buffer, and the pipeline answers an input only
//! once they are durable there (`engine.rs`); each output delivers its buffer's
//! chunks oldest first, trying again with back-off and setting aside what it gives
//! up on (`output.rs`, with the sinks in `sinks.rs`); the forward input serves
//! Fluentd's clients and acknowledges only durable events (`forward_in.rs`); the
//! syslog input takes RFC 5424 and 3164 over UDP and TCP (`syslog_in.rs`); the tail
//! input follows files and commits positions only past durable lines (`tail_in.rs`).
//!
//! The pieces that only compute (protocols, parsers, patterns, the buffer's file
//! format) are `shoal-logs`; this crate adds sockets, timers and tasks.

pub mod build;
pub mod engine;
pub mod forward_in;
pub mod http_in;
pub mod output;
pub mod running;
pub mod sinks;
pub mod syslog_in;
pub mod tail_in;
pub mod tasks_in;

pub use engine::{Engine, EngineError};
