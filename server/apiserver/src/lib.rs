//! shoal's API server: the gRPC API (for the CLI) and the agent API (for nodes) over the
//! object layer. The protocol itself is `shoal-wire`'s.
//!
//! # Guarantees
//! - Apply validates every manifest before writing any; one invalid manifest means
//!   nothing is written and every problem is reported.
//! - The server never trusts the client's validation: it decodes and checks again.
//! - A non-loopback listen address requires TLS unless explicitly made insecure.

pub mod agent;
mod dispatcher;
mod exec;
mod followed;
mod listen;
mod logs;
mod peers;
mod pipelines;
pub mod pki;
mod service;
mod status_writer;
mod watch;
mod watch_cache;
pub mod webhook;

pub use agent::{AgentService, HeartbeatConfig};
pub use dispatcher::Dispatcher;
pub use listen::{serve, ListenConfig, ListenError, TlsFiles};
pub use peers::PeerTable;
pub use pipelines::PipelineTable;
pub use pki::ClusterPki;
pub use service::ApiService;
pub use status_writer::StatusWriter;
pub use webhook::Webhooks;

pub use shoal_wire::pb;

/// The store key naming the server that currently runs the controllers.
pub const CONTROLLER_LEADER_KEY: &str = "/shoal/leader/controllers";
