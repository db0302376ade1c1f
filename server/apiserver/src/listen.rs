//! Where and how the API listens: mutual TLS by default, plaintext only on loopback
//! and only when asked for (`--insecure`).

use std::net::SocketAddr;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::auth::Access;
use crate::pb::agent_server::AgentServer;
use crate::pb::api_server::ApiServer;
use crate::{AgentService, ApiService, Webhooks};
use shoal_wire::{TlsServer, MAX_REQUEST_BYTES};

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    /// Plaintext, no identities: only on loopback.
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("--listen {0} --insecure: plaintext is served on loopback only (127.0.0.1, ::1); without --insecure the API is mutual TLS")]
    InsecureNonLoopback(SocketAddr),
    #[error("--listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving the API failed: {0}")]
    Serve(String),
}

impl ListenConfig {
    /// Refuses plaintext beyond loopback, then binds.
    pub async fn bind(&self) -> Result<TcpListener, ListenError> {
        if self.insecure && !self.addr.ip().is_loopback() {
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
/// The admin API takes admin certificates only (see `auth`).
pub async fn serve(
    service: ApiService,
    agent: AgentService,
    webhooks: Webhooks,
    listener: TcpListener,
    tls: Option<TlsServer>,
    access: Access,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ListenError> {
    // HTTP/1.1 too: git hosts and curl call the webhook that way.
    let mut builder = Server::builder().tcp_nodelay(true).accept_http1(true);
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
    let admin_only = move |req: tonic::Request<()>| {
        access.admin(req.extensions())?;
        Ok(req)
    };
    let api = InterceptedService::new(
        ApiServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES),
        admin_only,
    );
    let router = builder
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .add_service(AgentServer::new(agent).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(webhooks);
    let served = match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                .await
        }
        None => {
            // Small request/response pairs: without NODELAY, Nagle and delayed ACKs
            // add ~40ms (the TLS listener sets it too).
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                if let Ok(c) = &conn {
                    let _ = c.set_nodelay(true);
                }
                conn
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    served.map_err(|e| ListenError::Serve(e.to_string()))
}
