//! Connecting to a shoal server, for the CLI, the agents and the benchmarks: one place
//! that knows the URL forms, TLS trust and message size limits.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::pb::agent_client::AgentClient;
use crate::pb::api_client::ApiClient;
use crate::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the shoal server at {url}: {why} (is `shoal server` running there?)")]
    Unreachable { url: String, why: String },
    #[error("cannot reach any shoal server: {attempts} (is `shoal server` running there?)")]
    NoneReachable { attempts: String },
    #[error("cannot read CA certificate {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
}

/// The endpoint for `url` (`http://host:port`, or `https://` with an optional CA
/// bundle to trust besides the system's roots).
pub fn endpoint(url: &str, ca_cert: Option<&Path>) -> Result<Endpoint, ClientError> {
    let bad = |why: &str| ClientError::BadUrl {
        url: url.into(),
        why: why.into(),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad("expected http://host:port or https://host:port"));
    }
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|source| ClientError::Ca {
                path: path.display().to_string(),
                source,
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e.to_string()))?;
    }
    Ok(endpoint)
}

/// Connects now: an unreachable server is an error at once (the CLI's case).
pub async fn channel(url: &str, ca_cert: Option<&Path>) -> Result<Channel, ClientError> {
    endpoint(url, ca_cert)?
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            url: url.into(),
            why: shoal_api::error_chain(&e),
        })
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
    ca_cert: Option<&Path>,
) -> Result<(usize, ApiClient<Channel>), ClientError> {
    let mut attempts = Vec::new();
    for i in (0..urls.len()).map(|k| (first + k) % urls.len()) {
        match api_client(&urls[i], ca_cert).await {
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
pub async fn api_client(
    url: &str,
    ca_cert: Option<&Path>,
) -> Result<ApiClient<Channel>, ClientError> {
    Ok(ApiClient::new(channel(url, ca_cert).await?)
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
        let e = api_client_of(&closed, 1, None)
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
        let e = endpoint("127.0.0.1:7443", None).expect_err("no scheme");
        assert!(
            e.to_string().starts_with("--server \"127.0.0.1:7443\""),
            "{e}"
        );
    }
}
