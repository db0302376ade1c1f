//! shoal's API server: a tonic gRPC service over the object layer, and the client side
//! the CLI uses to reach it.
//!
//! # Guarantees
//! - Apply validates every manifest before writing any; one invalid manifest means
//!   nothing is written and every problem is reported.
//! - The server never trusts the client's validation: it decodes and checks again.
//! - A non-loopback listen address requires TLS unless explicitly made insecure.

pub mod agent;
pub mod client;
mod dispatcher;
mod exec;
mod listen;
mod logs;
mod service;
mod status_writer;
mod watch;
mod watch_cache;
pub mod webhook;

pub use agent::{AgentService, HeartbeatConfig};
pub use dispatcher::Dispatcher;
pub use listen::{serve, ListenConfig, ListenError, TlsFiles};
pub use service::ApiService;
pub use status_writer::StatusWriter;
pub use webhook::Webhooks;

/// Generated protobuf and gRPC code.
pub mod pb {
    tonic::include_proto!("shoal.v1");

    /// For gRPC reflection (`grpcurl -plaintext 127.0.0.1:7443 list`).
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shoal_descriptor");
}

/// The store key naming the server that currently runs the controllers.
pub const CONTROLLER_LEADER_KEY: &str = "/shoal/leader/controllers";
