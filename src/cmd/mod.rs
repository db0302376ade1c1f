//! One module per command.

pub mod agent;
pub mod apply;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod events;
pub mod exec;
mod follow;
pub mod get;
pub mod gitsync;
pub mod image;
pub mod join;
pub mod logs;
pub mod network;
pub mod node;
pub mod patch;
pub mod ps;
pub mod rename;
pub mod rm;
pub mod rollout;
pub mod run;
pub mod run_flags;
pub mod scale;
pub mod server;
mod server_tls;
pub mod sim;
pub mod start;
pub mod stop;
pub mod tasks;
pub mod token;
pub mod up;
pub mod value;

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_wire::pb::api_client::ApiClient;
use shoal_wire::pb::InfoRequest;
use shoal_wire::{ClientConfig, Credentials};
use tonic::transport::Channel;

use crate::{Format, Outcome};

/// What every client command needs.
pub struct Context {
    /// The server: `--server` as given (one URL, or several separated by commas),
    /// else the client config's.
    pub server: String,
    /// What the client proves and trusts, from the client config and `--ca-cert`.
    creds: Result<Credentials, String>,
    pub format: Option<Format>,
    /// The server in the list that answered last: the next connection tries it first,
    /// so a command (a watch reconnecting) stays on one server while it is there.
    preferred: AtomicUsize,
}

/// `~/.shoal/config`, where `shoal server` writes the admin's config.
fn user_config() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".shoal/config"))
        .filter(|p| p.exists())
}

impl Context {
    /// The client's settings from its flags and config. A config that cannot be read
    /// fails the commands that talk to a server, naming the file, and no others.
    pub fn from_flags(
        server: Option<String>,
        config: Option<PathBuf>,
        ca_cert: Option<PathBuf>,
        format: Option<Format>,
    ) -> Context {
        let loaded = config
            .or_else(user_config)
            .map(|path| ClientConfig::read(&path).map(|c| (c, path)))
            .transpose()
            .map_err(|e| e.to_string());
        let (config, creds) = match loaded {
            Ok(Some((config, path))) => {
                let creds = config.credentials(&path).map_err(|e| e.to_string());
                (Some(config), creds)
            }
            Ok(None) => (None, Ok(Credentials::default())),
            Err(e) => (None, Err(e)),
        };
        let creds = match (creds, ca_cert) {
            (Ok(mut creds), Some(path)) => std::fs::read(&path)
                .map(|pem| {
                    creds.ca_pem = Some(pem);
                    creds
                })
                .map_err(|e| format!("--ca-cert {}: {e}", path.display())),
            (creds, _) => creds,
        };
        let server = server
            .or_else(|| config.as_ref().map(|c| c.server.clone()))
            .unwrap_or_else(|| crate::DEFAULT_SERVER.to_string());
        let server = match &config {
            Some(c) => upgraded(&server, c),
            None => server,
        };
        Context {
            server,
            creds,
            format,
            preferred: AtomicUsize::new(0),
        }
    }

    pub fn credentials(&self) -> anyhow::Result<&Credentials> {
        self.creds.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// A client of the first listed server that answers, starting with the last one
    /// that did.
    pub async fn client(&self) -> anyhow::Result<ApiClient<Channel>> {
        let urls = shoal_wire::server_urls(&self.server)?;
        let first = self.preferred.load(Ordering::Relaxed);
        let (answered, client) =
            shoal_wire::api_client_of(&urls, first, self.credentials()?).await?;
        self.preferred.store(answered, Ordering::Relaxed);
        Ok(client)
    }
}

/// `http://HOST:PORT` in `--server` where the config says that same server speaks
/// TLS (`https://HOST:PORT`, with a client certificate) means the config's: the
/// server serves no plaintext, and scripts written before mutual TLS name it so.
fn upgraded(server: &str, config: &ClientConfig) -> String {
    if config.client_certificate.is_none() {
        return server.to_string();
    }
    let secured: Vec<&str> = config
        .server
        .split(',')
        .filter_map(|u| u.trim().strip_prefix("https://"))
        .collect();
    server
        .split(',')
        .map(|u| {
            let u = u.trim();
            match u.strip_prefix("http://") {
                Some(rest) if secured.contains(&rest.trim_end_matches('/')) => {
                    format!("https://{}", rest.trim_end_matches('/'))
                }
                _ => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The objects of `kind` whose labels `selector` takes (empty: all).
pub async fn list_objects(
    ctx: &Context,
    kind: &str,
    selector: &str,
) -> anyhow::Result<Vec<shoal_api::DynamicObject>> {
    let list = ctx
        .client()
        .await?
        .list(shoal_wire::pb::ListRequest {
            kind: kind.into(),
            label_selector: selector.into(),
            involved_object: String::new(),
        })
        .await?
        .into_inner();
    list.items
        .iter()
        .map(|j| crate::output::parse_object(j))
        .collect()
}

/// Resolves a kind the way users type it, with the list of kinds when it is unknown.
pub fn kind(name: &str) -> anyhow::Result<&'static shoal_api::KindDesc> {
    shoal_api::kind_by_name(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown kind {name:?}; known kinds: {} (singular, plural or short names work)",
            shoal_api::object::kind_names()
        )
    })
}

/// Splits `kind/name` (as in `service/web`).
pub fn kind_and_name(reference: &str) -> anyhow::Result<(&'static shoal_api::KindDesc, String)> {
    let (k, n) = reference
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{reference:?}: expected KIND/NAME, like service/web"))?;
    if n.is_empty() {
        anyhow::bail!("{reference:?}: the name is missing");
    }
    Ok((kind(k)?, n.to_string()))
}

pub async fn version(ctx: &Context) -> Outcome {
    println!("client: shoal {}", env!("CARGO_PKG_VERSION"));
    let info = ctx.client().await?.info(InfoRequest {}).await?.into_inner();
    println!("server: shoal {} ({})", info.version, info.server_id);
    println!("store: {}", info.store);
    println!(
        "controller leader: {}",
        if info.leader.is_empty() {
            "<none>"
        } else {
            &info.leader
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `path` readable by this user only, from the moment the file
/// exists, and durably (a private key, the cluster key, a client config).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_whole(path, bytes, 0o600)
}

/// Writes `bytes` to `path` with `mode`, whole or not at all: into a file beside it,
/// synced, then renamed over it, so a reader (a CLI reading its config while a server
/// restarts) never sees half of it.
pub fn write_whole(path: &std::path::Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .with_context(|| partial.display().to_string())?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&partial, path).with_context(|| path.display().to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plaintext_url_of_a_server_the_config_names_over_tls_means_tls() {
        let mut config = ClientConfig::new("https://127.0.0.1:7443".into());
        config.client_certificate = Some("cert".into());
        config.client_key = Some("key".into());
        assert_eq!(
            upgraded("http://127.0.0.1:7443", &config),
            "https://127.0.0.1:7443"
        );
        // Another server, or a config with no certificate: as given.
        assert_eq!(
            upgraded("http://127.0.0.1:7444", &config),
            "http://127.0.0.1:7444"
        );
        assert_eq!(
            upgraded("http://127.0.0.1:7443,http://10.0.0.1:7443", &config),
            "https://127.0.0.1:7443,http://10.0.0.1:7443"
        );
        config.client_certificate = None;
        assert_eq!(
            upgraded("http://127.0.0.1:7443", &config),
            "http://127.0.0.1:7443"
        );
    }
}
