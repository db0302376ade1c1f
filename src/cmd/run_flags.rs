//! `docker run`'s container flags, turned into a Task's spec fields: -e, -w, -u,
//! --entrypoint, -v, --tmpfs, -p, --restart, --log-opt, --network, --network-alias,
//! --link. Each bad value is one error naming
//! its flag.

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

#[derive(clap::Args, Default)]
pub struct ContainerFlags {
    /// An environment variable, KEY=VALUE; repeatable.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// The working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// The user to run as: uid[:gid] or name[:group].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Replaces the image's entrypoint; the command after the image is its arguments.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// SOURCE:TARGET[:ro]: SOURCE an absolute host path (bind mount) or a volume name.
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// TARGET[:size=SIZE]: an empty memory-backed directory.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// no | on-failure[:N] | always | unless-stopped: restart the container in place.
    #[arg(long)]
    pub restart: Option<String>,
    /// max-size=SIZE or max-file=N: json-file log rotation; repeatable.
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// HOST_PORT:CONTAINER_PORT[/tcp|/udp]: publish a container port on the node.
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// A Network to join (it must exist); repeatable.
    #[arg(long)]
    pub network: Vec<String>,
    /// A DNS name for the container on its first --network; repeatable.
    #[arg(long)]
    pub network_alias: Vec<String>,
    /// NAME[:ALIAS]: inside this container, ALIAS resolves to the task NAME (on a
    /// network both join); repeatable.
    #[arg(long)]
    pub link: Vec<String>,
}

impl ContainerFlags {
    /// The spec fields these flags set, next to `image` and `command`.
    pub fn spec_fields(&self) -> Result<Map<String, Value>> {
        let mut spec = Map::new();
        let ports: Vec<Value> = self
            .publish
            .iter()
            .map(|p| publish(p))
            .collect::<Result<_>>()?;
        if !ports.is_empty() {
            spec.insert("ports".into(), ports.into());
        }
        if !self.network_alias.is_empty() && self.network.is_empty() {
            bail!("--network-alias: needs a --network to be an alias on");
        }
        let networks: Vec<Value> = self
            .network
            .iter()
            .enumerate()
            .map(|(i, n)| match i {
                0 if !self.network_alias.is_empty() => {
                    json!({"name": n, "aliases": self.network_alias})
                }
                _ => json!(n),
            })
            .collect();
        if !networks.is_empty() {
            spec.insert("networks".into(), networks.into());
        }
        for l in &self.link {
            shoal_api::parse_link(l).map_err(|why| anyhow!("--link {why}"))?;
            if self.network.is_empty() {
                bail!("--link {l}: a link resolves on a network; give --network too");
            }
        }
        if !self.link.is_empty() {
            spec.insert("links".into(), json!(self.link));
        }
        let mut env = Map::new();
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("-e {kv:?}: expected KEY=VALUE"))?;
            env.insert(k.to_string(), v.into());
        }
        if !env.is_empty() {
            spec.insert("env".into(), env.into());
        }
        if let Some(w) = &self.workdir {
            spec.insert("workdir".into(), w.as_str().into());
        }
        if let Some(u) = &self.user {
            spec.insert("user".into(), u.as_str().into());
        }
        if let Some(e) = &self.entrypoint {
            // As Docker: one program, no shell splitting.
            spec.insert("entrypoint".into(), json!([e]));
        }
        let mut mounts: Vec<Value> = self
            .volume
            .iter()
            .map(|v| volume(v))
            .collect::<Result<_>>()?;
        for t in &self.tmpfs {
            mounts.push(tmpfs(t)?);
        }
        if !mounts.is_empty() {
            spec.insert("mounts".into(), mounts.into());
        }
        if let Some(r) = &self.restart {
            if let Some(policy) = restart(r)? {
                spec.insert("restart".into(), policy);
            }
        }
        if !self.log_opt.is_empty() {
            spec.insert("logging".into(), log_opts(&self.log_opt)?);
        }
        Ok(spec)
    }
}

/// `docker run -p HOST:CONTAINER[/tcp|/udp]`: a host-mode port (one container owns it).
fn publish(p: &str) -> Result<Value> {
    let (ports, protocol) = p.split_once('/').unwrap_or((p, "tcp"));
    if !matches!(protocol, "tcp" | "udp") {
        bail!("-p {p:?}: the protocol is tcp or udp");
    }
    let number = |s: &str| -> Result<u16> {
        s.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("-p {p:?}: {s:?} is not a port number"))
    };
    let (host, container) = ports
        .split_once(':')
        .ok_or_else(|| anyhow!("-p {p:?}: expected HOST_PORT:CONTAINER_PORT"))?;
    Ok(json!({
        "target": number(container)?,
        "published": number(host)?,
        "protocol": protocol,
        "mode": "host",
    }))
}

fn volume(v: &str) -> Result<Value> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => bail!("-v {v:?}: expected SOURCE:TARGET[:ro]"),
    };
    if source.is_empty() || target.is_empty() {
        bail!("-v {v:?}: expected SOURCE:TARGET[:ro]");
    }
    let type_ = if source.starts_with('/') {
        "bind"
    } else {
        "volume"
    };
    let mut m = json!({"type": type_, "source": source, "target": target});
    if read_only {
        m["readOnly"] = true.into();
    }
    Ok(m)
}

fn tmpfs(t: &str) -> Result<Value> {
    let (target, options) = t.split_once(':').unwrap_or((t, ""));
    let mut m = json!({"type": "tmpfs", "target": target});
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", size)) => {
                let bytes: shoal_api::quantity::ByteSize = size
                    .parse()
                    .map_err(|e| anyhow!("--tmpfs {t:?}: size: {e}"))?;
                m["size"] = bytes.to_string().into();
            }
            _ => bail!("--tmpfs {t:?}: the only option is size=SIZE"),
        }
    }
    Ok(m)
}

/// Docker's restart policies as a Task's in-place restart policy; None for `no`.
fn restart(r: &str) -> Result<Option<Value>> {
    let (name, count) = r.split_once(':').unwrap_or((r, ""));
    let policy = |condition: &str, attempts: u32| {
        Some(json!({"condition": condition, "delay": "1s", "maxAttempts": attempts}))
    };
    Ok(match (name, count) {
        ("no", "") => None,
        ("always" | "unless-stopped", "") => policy("any", 0),
        ("on-failure", "") => policy("on-failure", 0),
        ("on-failure", n) => policy(
            "on-failure",
            n.parse()
                .map_err(|_| anyhow!("--restart {r:?}: the count after on-failure: is a number"))?,
        ),
        _ => bail!("--restart {r:?}: expected no, on-failure[:N], always or unless-stopped"),
    })
}

fn log_opts(opts: &[String]) -> Result<Value> {
    let mut logging = Map::new();
    for o in opts {
        match o.split_once('=') {
            Some(("max-size", size)) => {
                let bytes: shoal_api::quantity::ByteSize =
                    size.parse().map_err(|e| anyhow!("--log-opt {o:?}: {e}"))?;
                logging.insert("maxSize".into(), bytes.to_string().into());
            }
            Some(("max-file", n)) => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| anyhow!("--log-opt {o:?}: max-file is a number"))?;
                logging.insert("maxFile".into(), n.into());
            }
            _ => bail!("--log-opt {o:?}: expected max-size=SIZE or max-file=N"),
        }
    }
    Ok(logging.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(f: impl FnOnce(&mut ContainerFlags)) -> Result<Map<String, Value>> {
        let mut c = ContainerFlags::default();
        f(&mut c);
        c.spec_fields()
    }

    #[test]
    fn docker_flags_become_spec_fields() {
        let spec = flags(|c| {
            c.env = vec!["A=1".into()];
            c.workdir = Some("/srv".into());
            c.user = Some("1000:1000".into());
            c.entrypoint = Some("/bin/sh".into());
            c.volume = vec!["/var/data:/data:ro".into(), "cache:/cache".into()];
            c.tmpfs = vec!["/run:size=1Mi".into()];
            c.restart = Some("on-failure:3".into());
            c.log_opt = vec!["max-size=1Mi".into(), "max-file=2".into()];
            c.publish = vec!["8081:80".into(), "5353:53/udp".into()];
        })
        .expect("valid flags");
        assert_eq!(spec["env"], json!({"A": "1"}));
        assert_eq!(spec["entrypoint"], json!(["/bin/sh"]));
        assert_eq!(
            spec["mounts"],
            json!([
                {"type": "bind", "source": "/var/data", "target": "/data", "readOnly": true},
                {"type": "volume", "source": "cache", "target": "/cache"},
                {"type": "tmpfs", "target": "/run", "size": "1m"},
            ])
        );
        assert_eq!(spec["restart"]["condition"], "on-failure");
        assert_eq!(spec["restart"]["maxAttempts"], 3);
        assert_eq!(spec["logging"], json!({"maxSize": "1m", "maxFile": 2}));
        assert_eq!(
            spec["ports"],
            json!([
                {"target": 80, "published": 8081, "protocol": "tcp", "mode": "host"},
                {"target": 53, "published": 5353, "protocol": "udp", "mode": "host"},
            ])
        );
        assert!(flags(|c| c.restart = Some("no".into()))
            .expect("no")
            .get("restart")
            .is_none());
    }

    #[test]
    fn each_bad_flag_is_named() {
        type Set = Box<dyn FnOnce(&mut ContainerFlags)>;
        let cases: [(&str, Set); 6] = [
            ("-e", Box::new(|c| c.env = vec!["A".into()])),
            ("-v", Box::new(|c| c.volume = vec!["/only".into()])),
            ("--tmpfs", Box::new(|c| c.tmpfs = vec!["/t:mode=1".into()])),
            (
                "--restart",
                Box::new(|c| c.restart = Some("sometimes".into())),
            ),
            (
                "--log-opt",
                Box::new(|c| c.log_opt = vec!["max-size=lots".into()]),
            ),
            ("-p", Box::new(|c| c.publish = vec!["80".into()])),
        ];
        for (flag, f) in cases {
            let err = flags(f).expect_err(flag).to_string();
            assert!(err.starts_with(flag), "{flag}: {err}");
        }
    }
}
