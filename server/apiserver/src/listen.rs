//! Where and how the API listens: loopback by default, TLS required elsewhere.

use std::net::SocketAddr;
use std::path::PathBuf;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::pb::agent_server::AgentServer;
use crate::pb::api_server::ApiServer;
use crate::{AgentService, ApiService, Webhooks};
use shoal_wire::MAX_REQUEST_BYTES;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Allow a non-loopback address without TLS.
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("--listen {0}: not a loopback address, and TLS is off; give --tls-cert and --tls-key, or --insecure to serve plaintext anyway")]
    InsecureNonLoopback(SocketAddr),
    #[error("--listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: cannot read {path}: {source}")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serving the API failed: {0}")]
    Serve(String),
}

impl ListenConfig {
    /// Refuses plaintext on a non-loopback address unless `insecure`, then binds.
    pub async fn bind(&self) -> Result<TcpListener, ListenError> {
        if !self.addr.ip().is_loopback() && self.tls.is_none() && !self.insecure {
            return Err(ListenError::InsecureNonLoopback(self.addr));
        }
        TcpListener::bind(self.addr)
            .await
            .map_err(|source| ListenError::Bind {
                addr: self.addr,
                source,
            })
    }
}

/// Serves the API and the agent API (with gRPC reflection) on `listener` until `shutdown` completes.
pub async fn serve(
    service: ApiService,
    agent: AgentService,
    webhooks: Webhooks,
    listener: TcpListener,
    tls: Option<&TlsFiles>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ListenError> {
    // HTTP/1.1 too: git hosts and curl call the webhook that way.
    let mut builder = Server::builder().tcp_nodelay(true).accept_http1(true);
    if let Some(tls) = tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ListenError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ListenError::Serve(e.to_string()))?;
    }
    // Both reflection versions: grpcurl and Postman ask for v1, Python's grpcio-reflection,
    // Evans and older grpcurl for v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ListenError::Serve(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ListenError::Serve(e.to_string()))?;
    // Small request/response pairs: without NODELAY, Nagle and delayed ACKs add ~40ms.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn
    });
    builder
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ApiServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(AgentServer::new(agent).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(webhooks)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ListenError::Serve(e.to_string()))
}
