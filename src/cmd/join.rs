//! `shoal agent --join URL --token T`: a node's first contact. It makes its own key
//! (which never leaves it) and a CSR, sends them with the token, and keeps what comes
//! back under `<data-dir>/pki`: its certificate and the cluster CA, which must be the
//! one the token names. A node that joined before keeps its certificate.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use shoal_wire::{pb, Credentials, LiveIdentity};

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

    fn next(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        PathBuf::from(name)
    }

    /// What the node connects with: the cluster CA and its own certificate, read
    /// now; None if it has not joined.
    pub fn load(&self) -> anyhow::Result<Option<(Credentials, shoal_pki::Certified)>> {
        if !self.exist() {
            return Ok(None);
        }
        let read = |p: &Path| std::fs::read(p).with_context(|| p.display().to_string());
        let identity = match LiveIdentity::from_pem(&read(&self.cert)?, &read(&self.key)?) {
            Ok(identity) => identity,
            // A renewal cut short between its two renames: its new key is in place,
            // its new certificate still beside it.
            Err(_) if Self::next(&self.cert).is_file() => {
                std::fs::rename(Self::next(&self.cert), &self.cert)?;
                LiveIdentity::from_pem(&read(&self.cert)?, &read(&self.key)?)?
            }
            Err(e) => return Err(e).with_context(|| self.cert.display().to_string()),
        };
        let cert_pem = String::from_utf8(read(&self.cert)?)?;
        let certified = shoal_pki::Certified::from_pem(&cert_pem)?;
        Ok(Some((
            Credentials {
                ca_pem: Some(read(&self.ca)?),
                identity: Some(identity),
            },
            certified,
        )))
    }

    /// Keeps a renewed key and certificate: both written beside the old ones, then
    /// renamed into place, key first (`load` finishes a renewal cut short).
    pub fn replace(&self, key_pem: &str, cert_pem: &str) -> anyhow::Result<()> {
        let (key, cert) = (Self::next(&self.key), Self::next(&self.cert));
        super::write_private(&key, key_pem.as_bytes())?;
        super::write_private(&cert, cert_pem.as_bytes())?;
        std::fs::rename(&key, &self.key)?;
        std::fs::rename(&cert, &self.cert)?;
        Ok(())
    }
}

/// Joins the cluster at `url` as `name` unless this node already has credentials.
pub async fn join(
    url: &str,
    token: &str,
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
    let channel = match url.starts_with("https://") {
        // The servers are trusted with the token only once their CA is the token's.
        true => {
            let ca_pem = cluster_ca(url).await?;
            check_ca(url, &ca_pem, &parsed)?;
            let trust = Credentials {
                ca_pem: Some(ca_pem.into_bytes()),
                identity: None,
            };
            shoal_wire::lazy_channel(url, &trust)?
        }
        false => shoal_wire::lazy_channel(url, &Credentials::default())?,
    };
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
    check_ca(url, &joined.ca_pem, &parsed)?;
    let dir = creds.key.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    super::write_private(&creds.key, key_pem.as_bytes())?;
    super::write_whole(&creds.ca, joined.ca_pem.as_bytes(), 0o644)?;
    // The certificate last, whole: its presence says the node joined.
    super::write_whole(&creds.cert, joined.cert_pem.as_bytes(), 0o644)?;
    eprintln!(
        "shoal agent: joined as {name}; credentials in {}",
        dir.display()
    );
    Ok(creds)
}

/// The cluster CA the first of the servers `list` names that answers says it has
/// (not trusted yet).
async fn cluster_ca(list: &str) -> anyhow::Result<String> {
    let mut failures = Vec::new();
    for url in shoal_wire::server_urls(list)? {
        let asked = async {
            let channel = shoal_wire::unverified_channel(&url).await?;
            let ca = shoal_wire::agent_client(channel)
                .cluster_ca(pb::ClusterCaRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("joining {url}: {}", s.message()))?;
            anyhow::Ok(ca.into_inner().ca_pem)
        };
        match asked.await {
            Ok(ca) => return Ok(ca),
            Err(e) => failures.push(e.to_string()),
        }
    }
    anyhow::bail!("{}", failures.join("; "))
}

fn check_ca(url: &str, ca_pem: &str, token: &shoal_pki::JoinToken) -> anyhow::Result<()> {
    let digest = shoal_pki::cert_digest(ca_pem)
        .map_err(|e| anyhow::anyhow!("joining {url}: the server's CA: {e}"))?;
    if digest != token.ca_digest {
        anyhow::bail!(
            "joining {url}: the server's CA (digest {digest}) is not the one the token names ({}); not trusting it",
            token.ca_digest
        );
    }
    Ok(())
}

/// Seconds until a certificate valid from `not_before` is due for renewal at `at` (both
/// by the CA's clock), counted from when it reached this machine (`received`, by this
/// machine's clock, like `now`): a node whose clock runs ahead of the server's would
/// otherwise find every new certificate already due, and renew in a loop.
fn renewal_wait(not_before: i64, at: i64, received: i64, now: i64) -> u64 {
    let due_after = at - not_before;
    let held = (now - received).max(0);
    (due_after - held).max(0) as u64
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Renews the node's certificate before it expires, for as long as the agent runs:
/// a new key and CSR, signed through the agent API (asked with the current
/// certificate), kept on disk and presented from the next connection on.
pub async fn keep_renewed(
    channel: tonic::transport::Channel,
    creds: NodeCredentials,
    mut current: shoal_pki::Certified,
    live: LiveIdentity,
    sans: Vec<String>,
) {
    let name = current.identity.name.clone();
    // When the certificate on disk reached this machine, by this machine's clock.
    let mut received = std::fs::metadata(&creds.cert)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(current.not_before, |d| d.as_secs() as i64);
    loop {
        let at = current.renewal_at().unwrap_or(current.not_before);
        let wait = renewal_wait(current.not_before, at, received, now());
        tracing::info!(in_s = wait, "node certificate renewal scheduled");
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        match renew(&channel, &creds, &name, &sans, &live).await {
            Ok(renewed) => {
                tracing::info!(not_after = renewed.not_after, "node certificate renewed");
                current = renewed;
                received = now();
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the node certificate failed; trying again in a minute");
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            }
        }
    }
}

async fn renew(
    channel: &tonic::transport::Channel,
    creds: &NodeCredentials,
    name: &str,
    sans: &[String],
    live: &LiveIdentity,
) -> anyhow::Result<shoal_pki::Certified> {
    let (key_pem, csr_pem) = shoal_pki::new_key_and_csr(name)?;
    let renewed = shoal_wire::agent_client(channel.clone())
        .renew(pb::RenewRequest {
            node: name.to_string(),
            csr_pem,
            sans: sans.to_vec(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let certified = shoal_pki::Certified::from_pem(&renewed.cert_pem)?;
    creds.replace(&key_pem, &renewed.cert_pem)?;
    live.replace(renewed.cert_pem.as_bytes(), key_pem.as_bytes())?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::renewal_wait;

    #[test]
    fn renewal_is_counted_from_receipt_on_this_machines_clock() {
        // Issued at 1000 (the CA's clock), due 600 s later.
        assert_eq!(renewal_wait(1000, 1600, 1000, 1000), 600, "clocks agree");
        assert_eq!(renewal_wait(1000, 1600, 1000, 1400), 200, "held 400 s");
        assert_eq!(renewal_wait(1000, 1600, 1000, 1700), 0, "overdue");
        // This machine's clock 50 minutes ahead: a new certificate is not yet due.
        assert_eq!(renewal_wait(1000, 1600, 4000, 4000), 600);
        // ... or behind: not late either.
        assert_eq!(renewal_wait(1000, 1600, 10, 310), 300);
    }
}
