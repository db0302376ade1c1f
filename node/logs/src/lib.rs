//! Log events as Fluentd has them, (tag, time, record), and the pieces of the log
//! pipeline that only compute: tag patterns (`tag.rs`), framing of MessagePack values
//! arriving on a stream (`frame.rs`) and the Fluentd forward protocol v1 (`forward.rs`).
//! No I/O: the agent's pipeline reads and writes; everything here is a pure function
//! of its input, so it is property-tested against arbitrary bytes.

pub mod event;
pub mod forward;
pub mod frame;
pub mod tag;

pub use event::{Event, EventTime};
pub use tag::TagPattern;
