//! Log events as Fluentd has them, (tag, time, record), and the pipeline's parts that
//! only compute, each a pure function of its input and property-tested against
//! arbitrary bytes where the input comes from outside: tag patterns (`tag.rs`), the
//! framing of MessagePack values on a stream (`frame.rs`), the Fluentd forward
//! protocol v1 (`forward.rs`), parsers of lines into records (`parse/`), filters
//! (`filter.rs`), routing by tag (`route.rs`) and formatters (`format.rs`). One part
//! touches the disk: an output's file buffer (`buffer.rs`), which is what makes
//! "nothing acknowledged is lost" true. Sockets, timers and processes belong to the
//! pipeline that uses this crate.

pub mod buffer;
pub mod event;
pub mod filter;
pub mod format;
pub mod forward;
pub mod frame;
pub mod parse;
pub mod route;
pub mod tag;

pub use event::{Event, EventTime};
pub use tag::TagPattern;
