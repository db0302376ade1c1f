//! shoal's wire: the protobuf messages and gRPC services (`proto/shoal.proto`) that the
//! CLI, the API server and the node agent speak, and the client connector they share.
//!
//! Below the server: it links only `shoal-api` (pure: kinds and text), never the store,
//! so a crate that only speaks the protocol, such as the agent, links no storage code.
//! Objects travel as JSON text, decoded by `shoal-api` at each end.

pub mod client_config;
pub mod connect;
pub mod tls;

pub use client_config::{ClientConfig, ConfigError};
pub use connect::{
    agent_client, api_client, api_client_of, channel, lazy_channel, node_channel, server_urls,
    unverified_channel, ClientError, Credentials,
};
pub use tls::{LiveIdentity, Peer, TlsClient, TlsError, TlsServer};

/// Generated protobuf and gRPC code.
pub mod pb {
    tonic::include_proto!("shoal.v1");

    /// For gRPC reflection (`grpcurl -plaintext 127.0.0.1:7443 list`).
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shoal_descriptor");
}

/// The largest request a server takes (an apply of many manifests, a batch of reports).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
/// The largest answer a client takes (a big list, a page of logs).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
