//! A server's own certificates, all from the cluster CA: the one it serves with (unless
//! the user gave one), the one it calls nodes' APIs with, and the admin's, which it
//! writes with the server's URL and the CA into a client config the CLI finds by itself.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use shoal_apiserver::ClusterPki;
use shoal_pki::{Identity, Role};
use shoal_wire::{ClientConfig, Credentials, LiveIdentity};

/// The names a server's certificate carries: loopback, this host's name, the listen
/// address (every local address when it is a wildcard), and what `--tls-san` adds.
pub fn server_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = nix::unistd::gethostname() {
        names.push(host.to_string_lossy().into_owned());
    }
    if listen.ip().is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let ip: Option<IpAddr> = a.address.as_ref().and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                });
                if let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) {
                    names.push(ip.to_string());
                }
            }
        }
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// A certificate the CA makes for `identity` (valid the cluster's certificate
/// lifetime) and its key, PEM.
fn issue(
    pki: &ClusterPki,
    identity: &Identity,
    names: &[String],
) -> anyhow::Result<(String, String)> {
    let issued = pki.ca().issue(identity, names, pki.node_cert_lifetime)?;
    Ok((issued.cert_pem, issued.key_pem.unwrap_or_default()))
}

/// The server's own certificate as `identity`, ready to present, and renewed in place
/// at two thirds of each certificate's life for as long as the server runs.
pub fn own_identity(
    pki: Arc<ClusterPki>,
    identity: Identity,
    names: Vec<String>,
) -> anyhow::Result<LiveIdentity> {
    let (cert, key) = issue(&pki, &identity, &names)?;
    let live = LiveIdentity::from_pem(cert.as_bytes(), key.as_bytes())?;
    let renewing = live.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(pki.node_cert_lifetime * 2 / 3).await;
            let renewed = issue(&pki, &identity, &names)
                .and_then(|(cert, key)| Ok(renewing.replace(cert.as_bytes(), key.as_bytes())?));
            match renewed {
                Ok(()) => tracing::info!(name = %identity.name, "server certificate renewed"),
                Err(e) => tracing::error!(error = %e, "renewing the server certificate failed"),
            }
        }
    });
    Ok(live)
}

/// How this server calls nodes' APIs: as a server of the cluster.
pub fn node_credentials(pki: &ClusterPki, identity: LiveIdentity) -> Credentials {
    Credentials {
        ca_pem: Some(pki.ca().cert_pem().as_bytes().to_vec()),
        identity: Some(identity),
    }
}

/// The URL a client on this machine reaches `listen` at.
pub fn local_url(listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", listen.port())
}

/// Writes the admin's client config to `<data-dir>/admin.yaml` (and the CA to
/// `<data-dir>/ca.pem`), and to
/// `~/.shoal/config` unless a person wrote that one (a file an earlier shoal server
/// wrote is replaced: it names a cluster that is gone, or this one).
pub fn write_admin_config(config: &ClientConfig, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("admin.yaml");
    std::fs::create_dir_all(data_dir).with_context(|| data_dir.display().to_string())?;
    // The CA alone, public: for curl and git hosts calling the webhook. Before the
    // config, whose appearance says the server is ready.
    if let Some(ca) = &config.certificate_authority {
        super::write_whole(&data_dir.join("ca.pem"), ca.as_bytes(), 0o644)?;
    }
    super::write_private(&path, config.to_yaml().as_bytes())?;
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        install_user_config(config, Path::new(&home), None)?;
    }
    Ok(path)
}

/// Writes `config` to `HOME/.shoal/config` unless a person wrote the file there (one an
/// earlier shoal server wrote names a cluster that is gone, or this one), owned by
/// `owner` (uid, gid) when given.
pub fn install_user_config(
    config: &ClientConfig,
    home: &Path,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let user = home.join(".shoal/config");
    let ours = match ClientConfig::read(&user) {
        Ok(existing) => existing.written_by.is_some(),
        Err(_) => !user.exists(),
    };
    if !ours {
        tracing::info!(path = %user.display(), "left as it is: not written by shoal");
        return Ok(());
    }
    let dir = home.join(".shoal");
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    super::write_private(&user, config.to_yaml().as_bytes())?;
    if let Some((uid, gid)) = owner {
        let (uid, gid) = (
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        nix::unistd::chown(&dir, uid, gid).with_context(|| dir.display().to_string())?;
        nix::unistd::chown(&user, uid, gid).with_context(|| user.display().to_string())?;
    }
    Ok(())
}

/// The admin's config: this server's URL and, with `pki` (a server on TLS), the CA
/// and a new admin certificate.
pub fn admin_config(
    pki: Option<&ClusterPki>,
    url: String,
    data_dir: &Path,
) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new(url);
    config.written_by = Some(format!("shoal server --data-dir {}", data_dir.display()));
    if let Some(pki) = pki {
        let admin = Identity {
            role: Role::Admin,
            name: "admin".into(),
        };
        let (cert, key) = issue(pki, &admin, &[])?;
        config.certificate_authority = Some(pki.ca().cert_pem().to_string());
        config.client_certificate = Some(cert);
        config.client_key = Some(key);
    }
    Ok(config)
}
