//! Log events as Fluentd has them, (tag, time, record), and the pieces of the log
//! pipeline that only compute: tag patterns (`tag.rs`), framing of MessagePack values
//! arriving on a stream (`frame.rs`), the Fluentd forward protocol v1 (`forward.rs`) and
//! parsers of lines into records (`parse/`),
//! pure functions of their input, property-tested against arbitrary bytes; and the
//! one piece that touches the disk, an output's file buffer (`buffer.rs`), which is
//! what makes "nothing acknowledged is lost" true. Sockets, timers and processes are
//! the pipeline's, not this crate's.

pub mod buffer;
pub mod event;
pub mod forward;
pub mod frame;
pub mod parse;
pub mod tag;

pub use event::{Event, EventTime};
pub use tag::TagPattern;
