//! `shoal agent --join URL --token T`: a node's first contact. It makes its own key
//! (which never leaves it) and a CSR, sends them with the token, and keeps what comes
//! back under `<data-dir>/pki`: its certificate and the cluster CA, which must be the
//! one the token names. A node that joined before keeps its certificate.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use shoal_wire::pb;

/// A node's credentials on disk.
pub struct NodeCredentials {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeCredentials {
    pub fn under(data_dir: &Path) -> NodeCredentials {
        let dir = data_dir.join("pki");
        NodeCredentials {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
        }
    }

    fn exist(&self) -> bool {
        self.ca.is_file() && self.cert.is_file() && self.key.is_file()
    }
}

/// Joins the cluster at `url` as `name` unless this node already has credentials.
pub async fn join(
    url: &str,
    token: &str,
    ca_cert: Option<&Path>,
    name: &str,
    sans: Vec<String>,
    data_dir: &Path,
) -> anyhow::Result<NodeCredentials> {
    let creds = NodeCredentials::under(data_dir);
    if creds.exist() {
        return Ok(creds);
    }
    // Checked before anything is sent: a mistyped token fails here, not at the server.
    let parsed = shoal_pki::JoinToken::parse(token).context("--token")?;
    let (key_pem, csr_pem) = shoal_pki::new_key_and_csr(name)?;
    let channel = shoal_wire::channel(url, ca_cert).await?;
    let joined = shoal_wire::agent_client(channel)
        .join(pb::JoinRequest {
            token: token.to_string(),
            name: name.to_string(),
            csr_pem,
            sans,
        })
        .await
        .map_err(|s| anyhow::anyhow!("joining {url}: {}", s.message()))?
        .into_inner();
    let ca_digest = shoal_pki::cert_digest(&joined.ca_pem)
        .map_err(|e| anyhow::anyhow!("joining {url}: the server's CA: {e}"))?;
    if ca_digest != parsed.ca_digest {
        anyhow::bail!(
            "joining {url}: the server's CA (digest {ca_digest}) is not the one the token names ({}); not trusting it",
            parsed.ca_digest
        );
    }
    let dir = creds.key.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    super::write_private(&creds.key, key_pem.as_bytes())?;
    std::fs::write(&creds.ca, &joined.ca_pem).with_context(|| creds.ca.display().to_string())?;
    // The certificate last: its presence says the node joined.
    std::fs::write(&creds.cert, &joined.cert_pem)
        .with_context(|| creds.cert.display().to_string())?;
    eprintln!(
        "shoal agent: joined as {name}; credentials in {}",
        dir.display()
    );
    Ok(creds)
}
