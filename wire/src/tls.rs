//! Mutual TLS for every shoal connection, on rustls directly rather than through
//! tonic's TLS options, for two reasons tonic's options cannot serve: a certificate
//! renewed while a process runs must be used by its next handshake (so the identity is
//! a [`LiveIdentity`] that both sides read at each handshake), and the server's
//! listener must take clients without a certificate too (a node joining with a token, a
//! git host calling the webhook), reading who a client is once per connection into
//! [`Peer`], which every request on that connection carries.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};
use shoal_pki::Certified;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

/// A handshake that takes longer than this is dropped (a client that connects and says
/// nothing must not hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate in it")]
    NoCertificate { what: String },
    #[error("{what}: {why}")]
    Pem { what: String, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.into() });
    }
    Ok(certs)
}

/// The roots a peer's certificate must chain to: the cluster CA (or a CA the user
/// gave for a certificate of their own).
fn roots(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem, "CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A certificate and its key that may be replaced while in use: the next handshake, as
/// server or as client, presents the new one.
#[derive(Clone)]
pub struct LiveIdentity {
    current: Arc<RwLock<Arc<CertifiedKey>>>,
    /// Moves with every replacement, so connections made with an older one can end.
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveIdentity")
    }
}

impl LiveIdentity {
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<LiveIdentity, TlsError> {
        Ok(LiveIdentity {
            current: Arc::new(RwLock::new(Self::load(cert_pem, key_pem)?)),
            generation: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    fn load(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = certificates(cert_pem, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            what: "private key".into(),
            why: e.to_string(),
        })?;
        let certified = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
        Ok(Arc::new(certified))
    }

    /// Replaces the certificate and key (a renewal): connections made from now on use
    /// it, and a client's connections made with the old one end (a server reads a
    /// caller's identity once per connection, and the one before last stops being in
    /// force at the next renewal).
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let new = Self::load(cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = new;
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ready once the identity is replaced after this call.
    fn replaced(&self) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let mut seen = self.generation.subscribe();
        Box::pin(async move {
            if seen.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

impl ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for LiveIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Who is on the other end of a server's connection; every request on it carries this
/// in its extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The client's certificate, verified against the cluster CA; None when it showed
    /// none (only token and webhook calls are served then).
    pub client: Option<Arc<Certified>>,
}

/// What a TLS listener hands the gRPC server.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for TlsConnection {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A TLS server side: presents `identity`, and verifies a client certificate against
/// `client_ca_pem` when the client shows one.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsServer {
    pub fn new(identity: LiveIdentity, client_ca_pem: &[u8]) -> Result<TlsServer, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(client_ca_pem)?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(identity));
        // gRPC is HTTP/2; HTTP/1.1 for webhooks and curl.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsServer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The connections `listener` accepts, each after its handshake (done apart from
    /// the accepting, so one slow client delays nobody).
    pub fn incoming(
        self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: pass, and keep accepting.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (self.acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let stream = match shake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| Certified::from_der(leaf).ok())
                        .map(Arc::new);
                    let peer = Peer {
                        addr: Some(addr),
                        client,
                    };
                    let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// The client side: trusts `ca_pem` only, and presents `identity` if there is one.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    /// The identity it presents, if any: a connection lasts as long as it does.
    identity: Option<LiveIdentity>,
    /// The name the server's certificate must carry, when it is not the URL's host (a
    /// node's API, reached at its address, is certified under the node's name).
    server_name: Option<ServerName<'static>>,
}

impl TlsClient {
    pub fn new(ca_pem: &[u8], identity: Option<LiveIdentity>) -> Result<TlsClient, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots(ca_pem)?);
        let mut config = match &identity {
            Some(identity) => builder.with_client_cert_resolver(Arc::new(identity.clone())),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            identity,
            server_name: None,
        })
    }

    /// Trusts any server: only to fetch the cluster CA, which the caller then checks
    /// against the digest its join token names before it sends anything secret.
    pub fn unverified() -> Result<TlsClient, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider())))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            identity: None,
            server_name: None,
        })
    }

    /// Expects the server's certificate to name `name` whatever address it is reached at.
    pub fn expecting(mut self, name: &str) -> Result<TlsClient, TlsError> {
        self.server_name = Some(
            ServerName::try_from(name.to_string())
                .map_err(|e| TlsError::Config(format!("server name {name:?}: {e}")))?,
        );
        Ok(self)
    }

    /// TLS over `tcp` to the server at `host` (whose certificate must name it, unless
    /// [`TlsClient::expecting`] said another name). The connection ends when the
    /// identity it was made with is replaced: the channel then connects again with the
    /// new one.
    pub async fn handshake(&self, host: &str, tcp: TcpStream) -> io::Result<ClientConnection> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?,
        };
        // Watched before the handshake: a replacement during it ends this one too.
        let replaced = self.identity.as_ref().map(LiveIdentity::replaced);
        let stream = self.connector.connect(name, tcp).await?;
        Ok(ClientConnection {
            stream,
            replaced,
            retired: false,
        })
    }
}

/// A client's TLS connection, which reads as closed (and refuses writes) once the
/// identity it was made with has been replaced.
pub struct ClientConnection {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    replaced: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    retired: bool,
}

impl ClientConnection {
    fn retired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.retired {
            if let Some(replaced) = &mut self.replaced {
                self.retired = replaced.as_mut().poll(cx).is_ready();
            }
        }
        self.retired
    }
}

fn retired_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the client's certificate was renewed; connecting again with the new one",
    )
}

impl AsyncRead for ClientConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.retired(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.retired(cx) {
            return Poll::Ready(Err(retired_error()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts every server certificate; signatures are still checked to be made by the
/// key the certificate holds (so the session is at least with that key's holder).
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_pki::{Ca, Identity, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    use super::*;

    fn identity(ca: &Ca, role: Role, name: &str) -> LiveIdentity {
        let who = Identity {
            role,
            name: name.into(),
        };
        let issued = ca
            .issue(&who, &["localhost".into()], Duration::from_secs(3600))
            .expect("issue");
        let key = issued.key_pem.expect("a key");
        LiveIdentity::from_pem(issued.cert_pem.as_bytes(), key.as_bytes()).expect("identity")
    }

    async fn connect(
        client: &TlsClient,
        addr: SocketAddr,
        incoming: &mut tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>>,
    ) -> (ClientConnection, TlsConnection) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let conn = client.handshake("localhost", tcp).await.expect("handshake");
        let accepted = incoming.next().await.expect("accepted").expect("tls");
        (conn, accepted)
    }

    /// A server reads a client's identity once per connection: a client's connection made
    /// with a certificate it has since replaced would carry the old one for as long as
    /// it lasts, so it ends, and the next one presents the new certificate.
    #[tokio::test]
    async fn a_client_connection_ends_when_its_identity_is_replaced() {
        let ca = Ca::create("test").expect("ca");
        let server = TlsServer::new(identity(&ca, Role::Server, "s"), ca.cert_pem().as_bytes())
            .expect("server");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = server.incoming(listener);
        let client_identity = identity(&ca, Role::Node, "n");
        let client = TlsClient::new(ca.cert_pem().as_bytes(), Some(client_identity.clone()))
            .expect("client");
        let (mut conn, mut accepted) = connect(&client, addr, &mut incoming).await;
        conn.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).await.expect("read");
        let first = accepted.connect_info().client.expect("a certificate");

        let renewed = ca
            .issue(
                &Identity {
                    role: Role::Node,
                    name: "n".into(),
                },
                &[],
                Duration::from_secs(3600),
            )
            .expect("issue");
        client_identity
            .replace(
                renewed.cert_pem.as_bytes(),
                renewed.key_pem.expect("a key").as_bytes(),
            )
            .expect("replace");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
            .await
            .expect("the idle connection ends at once");
        assert_eq!(read.expect("an end, not an error"), 0);
        assert!(
            conn.write_all(b"more").await.is_err(),
            "no more writes on it"
        );

        drop(accepted);
        let (_conn, accepted) = connect(&client, addr, &mut incoming).await;
        let second = accepted.connect_info().client.expect("a certificate");
        assert_eq!(second.identity, first.identity);
        assert_ne!(
            second.serial, first.serial,
            "the new connection shows the new one"
        );
    }
}
