//! shoal's API: the kinds, their metadata and status conventions, validation that reports
//! every problem with file, document, line and field path, the YAML codec, label
//! selectors and JSON Schemas.
//!
//! Architecture invariant: this crate does no I/O. It turns text into checked objects
//! and objects into text; everything that touches a disk, a socket or a process lives in
//! the runtime crates.

mod error_chain;
pub mod kinds;
pub mod labels;
pub mod meta;
pub mod object;
pub mod quantity;
pub mod schema;
mod schema_check;
pub mod selector;
pub mod strict_json;
pub mod tag;
pub mod validate;
pub mod yaml;

pub use error_chain::{error_chain, join_causes};
pub use kinds::*;
pub use meta::{
    ApiVersion, Condition, ConditionStatus, ObjectMeta, OwnerReference, Timestamp, API_VERSION,
};
pub use object::{kind_by_name, kind_of, DynamicObject, KindDesc, Resource, KINDS};
pub use quantity::{ByteSize, Duration};
pub use selector::Selector;
