//! Connecting to a shoal server, for the CLI and for agents.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::pb::api_client::ApiClient;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the shoal server at {url}: {why} (is `shoal server` running there?)")]
    Unreachable { url: String, why: String },
    #[error("cannot read CA certificate {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
}

/// Connects to `url` (`http://host:port`, or `https://` with an optional CA bundle).
pub async fn connect(url: &str, ca_cert: Option<&Path>) -> Result<ApiClient<Channel>, ClientError> {
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
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            url: url.into(),
            why: source_chain(&e),
        })?;
    Ok(ApiClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(64 << 20))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
