//! shoal's API server: the gRPC API (for the CLI) and the agent API (for nodes) over the
//! object layer. The protocol itself is `shoal-wire`'s.
//!
//! # Guarantees
//! - Apply validates every manifest before writing any; one invalid manifest means
//!   nothing is written and every problem is reported.
//! - The server never trusts the client's validation: it decodes and checks again.
//! - Every listener is mutual TLS unless explicitly made insecure, and insecure only
//!   on loopback; a caller is who its certificate says (`auth`).

pub mod agent;
mod auth;
mod dispatcher;
mod exec;
mod followed;
mod listen;
mod logs;
mod node_certs;
mod peers;
mod pipelines;
pub mod pki;
mod service;
mod status_writer;
mod values;
mod watch;
mod watch_cache;
pub mod webhook;

pub use agent::{AgentService, HeartbeatConfig};
pub use auth::Access;
pub use dispatcher::Dispatcher;
pub use listen::{serve, ListenConfig, ListenError};
pub use node_certs::NodeCerts;
pub use peers::PeerTable;
pub use pipelines::PipelineTable;
pub use pki::ClusterPki;
pub use service::ApiService;
pub use status_writer::StatusWriter;
pub use values::{ValueError, Values};
pub use webhook::Webhooks;

pub use shoal_wire::pb;

/// The store key naming the server that currently runs the controllers.
pub const CONTROLLER_LEADER_KEY: &str = "/shoal/leader/controllers";
