//! The container a Service's tasks and a standalone Task run, declared once: image,
//! command and env, the entrypoint, working directory and user, mounts (bind, named
//! volume, tmpfs), log rotation, published ports, resources and the health check, as
//! `docker run` and Swarm's `--mount` give them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::network::{check_networks, NetworkRef};
use super::require;
use super::value::{check_file_refs, FileKind, FileRef};
use super::workload::{
    check_healthcheck, check_ports, check_resources, HealthCheck, PortSpec, Resources,
};
use crate::quantity::ByteSize;
use crate::validate::Problems;

/// What a container runs and how: the fields a Service's task template and a Task
/// share. Both specs flatten it, so a manifest writes these fields directly under
/// `spec`, and the service controller copies it whole into each task it makes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Any OCI image reference.
    #[serde(default)]
    pub image: String,
    /// Overrides the image's entrypoint and cmd when given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Replaces the image's entrypoint (and drops its cmd); `command` then gives its
    /// arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The working directory (default: the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `uid[:gid]`, or `name[:group]` from the image's /etc/passwd (default: the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "LogOptions::is_empty")]
    pub logging: LogOptions,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    /// The Networks the container joins, by name, each with optional DNS aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkRef>,
    /// docker's `--link NAME[:ALIAS]`: inside this container, ALIAS (and NAME) resolve
    /// to the task NAME on a network both join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Secrets mounted read-only on tmpfs, under `/run/secrets` unless a target says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    /// Configs mounted read-only at their targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
}

/// A link's task name and the alias it is known by here (the name itself when none).
pub fn parse_link(link: &str) -> Result<(&str, &str), String> {
    let (name, alias) = link.split_once(':').unwrap_or((link, link));
    crate::meta::check_name(name, true).map_err(|why| format!("{link:?}: {why}"))?;
    crate::meta::check_name(alias, true).map_err(|why| format!("{link:?}: alias: {why}"))?;
    Ok((name, alias))
}

/// More environment variables than any program reads; past it an object is only a
/// burden on the store and every node.
const MAX_ENV: usize = 1000;

impl ContainerSpec {
    /// Publishes a port through the routing mesh (`mode: ingress`): a service's
    /// tasks with such a port join the `ingress` network.
    pub fn publishes_through_mesh(&self) -> bool {
        self.ports
            .iter()
            .any(|p| p.published.is_some() && p.mode == crate::PublishMode::Ingress)
    }

    /// Each secret and config the container gets, with its kind, secrets first.
    pub fn files(&self) -> impl Iterator<Item = (FileKind, &FileRef)> {
        (self.secrets.iter().map(|r| (FileKind::Secret, r)))
            .chain(self.configs.iter().map(|r| (FileKind::Config, r)))
    }

    /// Checks the container's fields, found under `spec` (`spec.image`, ...).
    pub(crate) fn check(&self, p: &mut Problems, spec: &str) {
        require(p, &format!("{spec}.image"), &self.image);
        if !self.image.trim().is_empty() {
            // The grammar the agent pulls by (oci-client's Reference is this one), so
            // what is accepted here is what a node can pull.
            if let Err(e) = self.image.parse::<oci_spec::distribution::Reference>() {
                p.push(
                    format!("{spec}.image"),
                    format!("{:?} is not an image reference: {e}", self.image),
                );
            }
        }
        check_env(p, &format!("{spec}.env"), &self.env);
        if self.env.len() > MAX_ENV {
            p.push(
                format!("{spec}.env"),
                format!("{} variables; at most {MAX_ENV}", self.env.len()),
            );
        }
        check_ports(p, &format!("{spec}.ports"), &self.ports);
        check_networks(p, &format!("{spec}.networks"), &self.networks);
        for (i, link) in self.links.iter().enumerate() {
            if let Err(why) = parse_link(link) {
                p.push(format!("{spec}.links[{i}]"), why);
            } else if self.networks.is_empty() {
                p.push(
                    format!("{spec}.links[{i}]"),
                    "a link resolves on a network both containers join; this one joins none",
                );
            }
        }
        let mut files = std::collections::BTreeSet::new();
        let (secrets, configs) = (format!("{spec}.secrets"), format!("{spec}.configs"));
        check_file_refs(p, &secrets, &self.secrets, FileKind::Secret, &mut files);
        check_file_refs(p, &configs, &self.configs, FileKind::Config, &mut files);
        check_resources(p, &format!("{spec}.resources"), &self.resources);
        check_healthcheck(p, &format!("{spec}.healthcheck"), &self.healthcheck);
        if self
            .entrypoint
            .as_ref()
            .is_some_and(|e| e.first().is_none_or(|a| a.trim().is_empty()))
        {
            p.push(format!("{spec}.entrypoint"), "needs a program");
        }
        if let Some(w) = &self.workdir {
            check_absolute(p, format!("{spec}.workdir"), w);
        }
        check_mounts(p, &format!("{spec}.mounts"), &self.mounts);
        if self.logging.max_file == Some(0) {
            p.push(format!("{spec}.logging.maxFile"), "must be at least 1");
        }
        if self.logging.max_size.is_some_and(|s| s.0 < 1024) {
            p.push(format!("{spec}.logging.maxSize"), "must be at least 1Ki");
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// `source` is a directory or file on the node.
    Bind,
    /// `source` names a volume the node keeps (created on first use, kept after the
    /// container goes, as Docker's named volumes).
    #[default]
    Volume,
    /// Memory-backed and empty at start; `source` is not used.
    Tmpfs,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    #[serde(rename = "type", default)]
    pub type_: MountType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Where it appears in the container: an absolute path.
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// tmpfs only: its size limit (default: half the node's memory, as the kernel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
}

/// Rotation of the json-file log (Docker's `--log-opt max-size=.. max-file=..`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogOptions {
    /// A log file is rotated at this size (default: the agent's, 10Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// Files kept, the current one included (default: the agent's, 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file: Option<u32>,
}

impl LogOptions {
    pub fn is_empty(&self) -> bool {
        self.max_size.is_none() && self.max_file.is_none()
    }
}

fn check_absolute(p: &mut Problems, path: String, value: &str) {
    if !value.starts_with('/') {
        p.push(path, format!("{value:?} must be an absolute path"));
    } else if value.split('/').any(|c| c == "..") {
        p.push(path, format!("{value:?} must not contain `..`"));
    }
}

pub(crate) fn check_mounts(p: &mut Problems, path: &str, mounts: &[Mount]) {
    let mut targets = std::collections::HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let at = format!("{path}[{i}]");
        check_absolute(p, format!("{at}.target"), &m.target);
        if m.target.trim_end_matches('/').is_empty() {
            p.push(format!("{at}.target"), "cannot be the container's root");
        }
        if !targets.insert(m.target.trim_end_matches('/')) {
            p.push(
                format!("{at}.target"),
                format!("{:?} is mounted twice", m.target),
            );
        }
        match m.type_ {
            MountType::Bind => check_absolute(p, format!("{at}.source"), &m.source),
            MountType::Volume => {
                if let Err(why) = crate::meta::check_name(&m.source, false) {
                    p.push(format!("{at}.source"), format!("volume name: {why}"));
                }
            }
            MountType::Tmpfs => {
                if !m.source.is_empty() {
                    p.push(format!("{at}.source"), "a tmpfs mount has no source");
                }
            }
        }
        if m.size.is_some() && m.type_ != MountType::Tmpfs {
            p.push(format!("{at}.size"), "only a tmpfs mount has a size");
        }
    }
}

/// Environment variable names: non-empty, no '=' and no NUL.
pub(crate) fn check_env(p: &mut Problems, path: &str, env: &BTreeMap<String, String>) {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.push(
                format!("{path}[{k:?}]"),
                "variable names must be non-empty and contain no '=' or NUL",
            );
        }
        if v.contains('\0') {
            p.push(format!("{path}[{k:?}]"), "value must not contain NUL");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::yaml::decode_manifests;

    #[test]
    fn bad_container_options_are_named_by_field() {
        let text =
            "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  image: a\n  \
                    entrypoint: []\n  workdir: srv\n  logging: {maxFile: 0}\n  mounts:\n  \
                    - {type: bind, source: data, target: /data}\n  \
                    - {type: volume, source: Bad_Name, target: /v}\n  \
                    - {type: tmpfs, source: x, target: /data}\n  \
                    - {type: volume, source: v, target: /../etc, size: 1m}\n";
        let errs = decode_manifests("t.yaml", text).expect_err("invalid");
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for needle in [
            "spec.entrypoint: needs a program",
            "spec.workdir: \"srv\" must be an absolute path",
            "spec.logging.maxFile: must be at least 1",
            "spec.mounts[0].source: \"data\" must be an absolute path",
            "spec.mounts[1].source: volume name",
            "spec.mounts[2].source: a tmpfs mount has no source",
            "spec.mounts[2].target: \"/data\" is mounted twice",
            "spec.mounts[3].target: \"/../etc\" must not contain `..`",
            "spec.mounts[3].size: only a tmpfs mount has a size",
        ] {
            assert!(all.iter().any(|e| e.contains(needle)), "{needle}: {all:?}");
        }
        let good = "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  image: a\n  \
                    mounts: [{source: cache, target: /cache}, {type: tmpfs, target: /run, size: 8m}]\n";
        decode_manifests("s.yaml", good).expect("valid");
    }

    #[test]
    fn links_name_a_task_and_need_a_network() {
        let task = |extra: &str| {
            format!("apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {{name: t}}\nspec:\n  image: a\n{extra}")
        };
        let errs = decode_manifests("t.yaml", &task("  links: ['db:Bad_Alias', web]\n"))
            .expect_err("invalid");
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            all.iter()
                .any(|e| e.contains("spec.links[0]: \"db:Bad_Alias\": alias")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.contains("spec.links[1]: a link resolves on a network")),
            "{all:?}"
        );
        decode_manifests(
            "t.yaml",
            &task("  networks: [front]\n  links: ['web.1:primary']\n"),
        )
        .expect("valid");
    }

    /// The container fields are flattened into both specs; a bad value among them is
    /// still reported at its own path and line, every one of them, and unknown fields
    /// are still refused.
    #[test]
    fn flattened_fields_are_located_like_any_other() {
        for kind in ["Service", "Task"] {
            let text = format!(
                "apiVersion: shoal.dev/v1\nkind: {kind}\nmetadata: {{name: t}}\nspec:\n  image: a\n  \
                 healthcheck: {{cmd: [x], interval: 5x}}\n  \
                 logging: {{maxSize: lots}}\n  imagePullPolicy: Always\n"
            );
            let errs = decode_manifests("t.yaml", &text).expect_err("invalid");
            let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            for needle in [
                "line 6: spec.healthcheck.interval: \"5x\" is not a duration",
                "line 7: spec.logging.maxSize: \"lots\" is not a size",
                "line 8: spec.imagePullPolicy: unknown field",
            ] {
                assert!(
                    all.iter().any(|e| e.contains(needle)),
                    "{kind} {needle}: {all:?}"
                );
            }
        }
    }
}
