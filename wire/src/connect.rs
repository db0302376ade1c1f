//! Connecting to a shoal server, for the CLI, the agents and the benchmarks: one place
//! that knows the URL forms, TLS trust and message size limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::pb::agent_client::AgentClient;
use crate::pb::api_client::ApiClient;
use crate::tls::{LiveIdentity, TlsClient, TlsError};
use crate::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the shoal server at {url}: {why} (is `shoal server` running there?)")]
    Unreachable { url: String, why: String },
    #[error("cannot reach any shoal server: {attempts} (is `shoal server` running there?)")]
    NoneReachable { attempts: String },
    #[error(
        "https:// needs a CA to trust: give --ca-cert, or a client config (--config) that has one"
    )]
    NoCa,
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a client proves and trusts: nothing (plaintext, `http://`), or for `https://`
/// the CA the server's certificate must chain to, and the client's own certificate
/// when it has one (mutual TLS, what every shoal server asks of its clients).
#[derive(Clone, Default)]
pub struct Credentials {
    pub ca_pem: Option<Vec<u8>>,
    pub identity: Option<LiveIdentity>,
}

impl Credentials {
    fn tls(&self) -> Result<TlsClient, ClientError> {
        let ca = self.ca_pem.as_deref().ok_or(ClientError::NoCa)?;
        Ok(TlsClient::new(ca, self.identity.clone())?)
    }
}

/// The endpoint tonic drives and the connector under it, for the servers `list` names
/// (one URL, or several comma-separated, all `http://` or all `https://`); `tls` makes
/// the TLS side for https. The endpoint always says `http`: TLS is the connector's job.
fn target(
    list: &str,
    tls: impl FnOnce() -> Result<TlsClient, ClientError>,
) -> Result<(Endpoint, Failover), ClientError> {
    let bad = |url: &str, why: &str| ClientError::BadUrl {
        url: url.into(),
        why: why.into(),
    };
    let urls = server_urls(list)?;
    let secure = urls[0].starts_with("https://");
    let scheme = if secure { "https://" } else { "http://" };
    let mut targets = Vec::new();
    let mut plain_urls = Vec::new();
    for url in &urls {
        let rest = url
            .strip_prefix(scheme)
            .ok_or_else(|| match url.contains("://") {
                true => bad(list, "mixes http:// and https:// servers"),
                false => bad(url, "expected http://host:port or https://host:port"),
            })?;
        let uri: tonic::codegen::http::Uri = format!("http://{rest}")
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(url, &e.to_string()))?;
        let host = uri.host().ok_or_else(|| bad(url, "no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        targets.push((host, uri.port_u16().unwrap_or(443)));
        plain_urls.push(uri.to_string());
    }
    let endpoint = Endpoint::from_shared(plain_urls.swap_remove(0))
        .map_err(|e| bad(list, &e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let failover = Failover {
        targets: Arc::new(targets),
        tls: if secure { Some(tls()?) } else { None },
        next: Arc::new(AtomicUsize::new(0)),
    };
    Ok((endpoint, failover))
}

/// A channel that connects when first used (an agent starts before its server), to
/// the first of the servers `list` names (comma-separated) that answers: each new
/// connection starts with the one that answered last, so a node stays on its server
/// while it is there and moves to another when it goes.
pub fn lazy_channel(list: &str, creds: &Credentials) -> Result<Channel, ClientError> {
    let (endpoint, connector) = target(list, || creds.tls())?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// Connects now: an unreachable server is an error at once (the CLI's case).
pub async fn channel(url: &str, creds: &Credentials) -> Result<Channel, ClientError> {
    let (endpoint, connector) = target(url, || creds.tls())?;
    connect_now(url, endpoint, connector).await
}

async fn connect_now(
    url: &str,
    endpoint: Endpoint,
    connector: Failover,
) -> Result<Channel, ClientError> {
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| ClientError::Unreachable {
            url: url.into(),
            why: shoal_api::error_chain(&e),
        })
}

/// A channel to a node's API at `address`, whose certificate names the node (None:
/// plaintext, in a cluster without TLS).
pub fn node_channel(
    address: &str,
    node: &str,
    creds: Option<&Credentials>,
) -> Result<Channel, ClientError> {
    let (endpoint, connector) = match creds {
        Some(creds) => target(&format!("https://{address}"), || {
            Ok(creds.tls()?.expecting(node)?)
        })?,
        None => target(&format!("http://{address}"), || Err(ClientError::NoCa))?,
    };
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// Connects now to `url` over TLS trusting any server (see [`TlsClient::unverified`]).
pub async fn unverified_channel(url: &str) -> Result<Channel, ClientError> {
    if !url.starts_with("https://") {
        return Err(ClientError::BadUrl {
            url: url.into(),
            why: "expected https://host:port".into(),
        });
    }
    let (endpoint, connector) = target(url, || Ok(TlsClient::unverified()?))?;
    connect_now(url, endpoint, connector).await
}

/// An IO a channel runs over: plaintext TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Connects to one of several servers (see [`lazy_channel`]).
#[derive(Clone)]
struct Failover {
    targets: Arc<Vec<(String, u16)>>,
    tls: Option<TlsClient>,
    /// The target that answered last.
    next: Arc<AtomicUsize>,
}

impl Failover {
    async fn connect(self) -> std::io::Result<hyper_util::rt::TokioIo<Box<dyn Io>>> {
        let first = self.next.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in (0..self.targets.len()).map(|k| (first + k) % self.targets.len()) {
            let (host, port) = &self.targets[i];
            let attempt = async {
                let tcp = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
                let _ = tcp.set_nodelay(true);
                Ok::<Box<dyn Io>, std::io::Error>(match &self.tls {
                    Some(tls) => Box::new(tls.handshake(host, tcp).await?),
                    None => Box::new(tcp),
                })
            };
            match attempt.await {
                Ok(io) => {
                    self.next.store(i, Ordering::Relaxed);
                    return Ok(hyper_util::rt::TokioIo::new(io));
                }
                Err(e) => failures.push(format!("{host}:{port}: {e}")),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            failures.join("; "),
        ))
    }
}

impl tower_service::Service<tonic::codegen::http::Uri> for Failover {
    type Response = hyper_util::rt::TokioIo<Box<dyn Io>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::codegen::http::Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// The servers `--server` names: one URL, or several separated by commas (servers on
/// one etcd serve the same API, so a client may use any of them).
pub fn server_urls(list: &str) -> Result<Vec<String>, ClientError> {
    let urls: Vec<String> = list.split(',').map(|u| u.trim().to_string()).collect();
    if urls.iter().any(String::is_empty) {
        return Err(ClientError::BadUrl {
            url: list.into(),
            why: "an empty URL in the list; separate several servers with commas".into(),
        });
    }
    Ok(urls)
}

/// Connects to the first of `urls` that answers, trying them in order from `first`
/// (the one that answered last time), and says which it was.
pub async fn api_client_of(
    urls: &[String],
    first: usize,
    creds: &Credentials,
) -> Result<(usize, ApiClient<Channel>), ClientError> {
    let mut attempts = Vec::new();
    for i in (0..urls.len()).map(|k| (first + k) % urls.len()) {
        match api_client(&urls[i], creds).await {
            Ok(client) => return Ok((i, client)),
            Err(ClientError::Unreachable { url, why }) if urls.len() > 1 => {
                attempts.push(format!("{url}: {why}"))
            }
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::NoneReachable {
        attempts: attempts.join("; "),
    })
}

/// Connects to the API service now.
pub async fn api_client(url: &str, creds: &Credentials) -> Result<ApiClient<Channel>, ClientError> {
    Ok(ApiClient::new(channel(url, creds).await?)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES))
}

/// The agent API over `channel` (typically lazy: an agent starts before its server).
pub fn agent_client(channel: Channel) -> AgentClient<Channel> {
    AgentClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_list_is_split_on_commas_and_refuses_empty_entries() {
        assert_eq!(
            server_urls("http://a:1, http://b:2").expect("two"),
            ["http://a:1", "http://b:2"]
        );
        let e = server_urls("http://a:1,,http://b:2").expect_err("empty entry");
        assert!(e.to_string().contains("an empty URL in the list"), "{e}");
    }

    #[tokio::test]
    async fn a_client_skips_servers_that_do_not_answer() {
        let dead = |port| format!("http://127.0.0.1:{port}");
        let closed = [dead(closed_port()), dead(closed_port())];
        let e = api_client_of(&closed, 1, &Credentials::default())
            .await
            .expect_err("nobody there");
        let text = e.to_string();
        assert!(
            text.starts_with("cannot reach any shoal server: "),
            "{text}"
        );
        assert!(
            text.contains(&closed[0]) && text.contains(&closed[1]),
            "{text}"
        );
    }

    /// A loopback port nothing listens on (bound, then closed).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[test]
    fn urls_without_a_scheme_are_refused_with_the_flag_named() {
        let e = target("127.0.0.1:7443", || Err(ClientError::NoCa))
            .err()
            .expect("no scheme");
        assert!(
            e.to_string().starts_with("--server \"127.0.0.1:7443\""),
            "{e}"
        );
        let e = target("http://a:1,https://b:2", || Err(ClientError::NoCa))
            .err()
            .expect("mixed");
        assert!(e.to_string().contains("mixes http:// and https://"), "{e}");
    }
}
