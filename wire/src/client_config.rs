//! The client config, kubeconfig's idea in one small file: which server, the CA to
//! trust, and the client's certificate and key, all inline so the file alone is enough.
//! `shoal server` writes one for its admin (`<data-dir>/admin.yaml`); the CLI reads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::connect::Credentials;
use crate::tls::{LiveIdentity, TlsError};

pub const KIND: &str = "ClientConfig";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    pub api_version: String,
    pub kind: String,
    /// The server URL, or several separated by commas.
    pub server: String,
    /// PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Set when a shoal server wrote the file: such a file may be replaced by the
    /// next server that starts; one a person wrote is left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("client config {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("client config {path}: {source}")]
    Tls { path: PathBuf, source: TlsError },
}

impl ClientConfig {
    pub fn new(server: String) -> ClientConfig {
        ClientConfig {
            api_version: "shoal.dev/v1".into(),
            kind: KIND.into(),
            server,
            certificate_authority: None,
            client_certificate: None,
            client_key: None,
            written_by: None,
        }
    }

    pub fn read(path: &Path) -> Result<ClientConfig, ConfigError> {
        let bad = |why: String| ConfigError::Read {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let config: ClientConfig = serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if config.kind != KIND {
            return Err(bad(format!("kind is {:?}, expected {KIND}", config.kind)));
        }
        if config.client_certificate.is_some() != config.client_key.is_some() {
            return Err(bad(
                "clientCertificate and clientKey go together: give both or neither".into(),
            ));
        }
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        // A struct of strings always serializes.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// What a client connects with, read from the file at `path` (named in errors).
    pub fn credentials(&self, path: &Path) -> Result<Credentials, ConfigError> {
        let tls = |source| ConfigError::Tls {
            path: path.to_path_buf(),
            source,
        };
        let identity = match (&self.client_certificate, &self.client_key) {
            (Some(cert), Some(key)) => {
                Some(LiveIdentity::from_pem(cert.as_bytes(), key.as_bytes()).map_err(tls)?)
            }
            _ => None,
        };
        Ok(Credentials {
            ca_pem: self.certificate_authority.clone().map(String::into_bytes),
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.yaml");
        let mut c = ClientConfig::new("https://127.0.0.1:7443".into());
        c.certificate_authority =
            Some("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into());
        c.written_by = Some("shoal server".into());
        std::fs::write(&path, c.to_yaml()).expect("write");
        assert_eq!(ClientConfig::read(&path).expect("read"), c);
    }

    #[test]
    fn a_bad_config_names_its_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "apiVersion: shoal.dev/v1\nkind: ClientConfig\nserver: x\nclientKey: k\n",
        )
        .expect("write");
        let e = ClientConfig::read(&path).expect_err("half an identity");
        let text = e.to_string();
        assert!(
            text.contains("c.yaml") && text.contains("clientCertificate and clientKey"),
            "{text}"
        );
        std::fs::write(&path, "server: [").expect("write");
        assert!(ClientConfig::read(&path).is_err());
    }
}
