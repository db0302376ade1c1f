//! Secrets and Configs: named values made with `shoal secret|config create`, kept
//! sealed in the store beside the object, handed only to the nodes running a task that
//! names them, and mounted into its containers as files. The object holds only what
//! may be shown: metadata, the value's digest and size. Both are immutable, as in
//! Swarm: a new value is a new name and a rolling update.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::define_kind;
use crate::validate::{Problems, Validate};

define_kind! {
    /// A secret value; never printed, mounted at `/run/secrets/<target>` on tmpfs.
    Secret {
        kind: "Secret",
        plural: "secrets",
        short: [],
        spec: ValueSpec,
        status: ValueStatus,
        dotted_names: true,
        user_writable: false,
    }
}

define_kind! {
    /// A configuration file's value, mounted at its target (default `/<name>`).
    Config {
        kind: "Config",
        plural: "configs",
        short: [],
        spec: ValueSpec,
        status: ValueStatus,
        dotted_names: true,
        user_writable: false,
    }
}

/// At most this many bytes in one value, Swarm's limit.
pub const MAX_VALUE_BYTES: usize = 500 * 1024;

/// Nothing for a user to set: the value comes with `create`, and never changes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValueSpec {}

impl Validate for ValueSpec {
    fn validate(&self, _: &mut Problems) {}
}

/// What may be said of a value without showing it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValueStatus {
    /// `hmac-sha256:<hex>`: the value's HMAC under a key derived from the cluster key,
    /// the same for the same value in one cluster, and no help in guessing it.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
}

/// A Secret or Config a container gets as a file.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRef {
    pub name: String,
    /// Where the file appears: a secret's relative target is under `/run/secrets`
    /// (default: its name); a config's default is `/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Owner of the file (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Octal permissions as a quoted string, `"0400"` (default `"0444"`): YAML reads
    /// an unquoted 0400 as four hundred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// Where a secret's relative target lives in the container.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Secret or Config: where its unnamed target goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    pub fn kind(self) -> &'static str {
        match self {
            FileKind::Secret => "Secret",
            FileKind::Config => "Config",
        }
    }

    /// `secret/db-pass`: how messages name a value, and the label it is sealed as.
    pub fn reference(self, name: &str) -> String {
        format!("{}/{name}", self.kind().to_ascii_lowercase())
    }
}

impl FileRef {
    /// The path inside the container.
    pub fn path(&self, kind: FileKind) -> String {
        match (&self.target, kind) {
            (Some(t), _) if t.starts_with('/') => t.clone(),
            (Some(t), FileKind::Secret) => format!("{SECRETS_DIR}/{t}"),
            (Some(t), FileKind::Config) => format!("/{t}"),
            (None, FileKind::Secret) => format!("{SECRETS_DIR}/{}", self.name),
            (None, FileKind::Config) => format!("/{}", self.name),
        }
    }

    /// The permissions (0444 unless given); None when `mode` is not octal up to 0777.
    pub fn mode_bits(&self) -> Option<u32> {
        match &self.mode {
            None => Some(0o444),
            Some(m) => u32::from_str_radix(m, 8).ok().filter(|b| *b <= 0o777),
        }
    }
}

/// Checks the `secrets` or `configs` of a container at `path`; `seen` holds the paths
/// already taken (a secret and a config cannot share one either).
pub(crate) fn check_file_refs(
    p: &mut Problems,
    path: &str,
    refs: &[FileRef],
    kind: FileKind,
    seen: &mut std::collections::BTreeSet<String>,
) {
    for (i, r) in refs.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Err(why) = crate::meta::check_name(&r.name, true) {
            p.push(format!("{at}.name"), why);
        }
        if let Some(t) = &r.target {
            if t.is_empty() || t.ends_with('/') {
                p.push(format!("{at}.target"), "must name a file");
            } else if t.split('/').any(|part| part == ".." || part == ".") {
                p.push(format!("{at}.target"), "may not contain . or .. parts");
            }
        }
        if r.mode_bits().is_none() {
            p.push(
                format!("{at}.mode"),
                format!(
                    "{:?} is not octal permissions up to \"0777\"",
                    r.mode.as_deref().unwrap_or_default()
                ),
            );
        }
        let file = r.path(kind);
        if file == "/" || file.starts_with("/proc/") || file.starts_with("/sys/") {
            p.push(
                format!("{at}.target"),
                format!("{file}: not a place for a file"),
            );
        } else if !seen.insert(file.clone()) {
            p.push(format!("{at}.target"), format!("{file} is taken twice"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, target: Option<&str>, mode: Option<&str>) -> FileRef {
        FileRef {
            name: name.into(),
            target: target.map(Into::into),
            mode: mode.map(Into::into),
            ..FileRef::default()
        }
    }

    #[test]
    fn targets_land_where_swarm_puts_them() {
        let f = file("db-pass", None, None);
        assert_eq!(f.path(FileKind::Secret), "/run/secrets/db-pass");
        assert_eq!(f.path(FileKind::Config), "/db-pass");
        let f = file("c", Some("/etc/app.conf"), None);
        assert_eq!(f.path(FileKind::Config), "/etc/app.conf");
        assert_eq!(f.path(FileKind::Secret), "/etc/app.conf");
        let f = file("s", Some("pw"), Some("0400"));
        assert_eq!(f.path(FileKind::Secret), "/run/secrets/pw");
        assert_eq!(f.mode_bits(), Some(0o400));
        assert_eq!(file("s", None, None).mode_bits(), Some(0o444));
    }

    #[test]
    fn bad_references_are_named_by_field() {
        let mut p = Problems::default();
        let mut seen = Default::default();
        let refs = [
            file("a", Some("../etc/passwd"), None),
            file("b", None, Some("0999")),
            file("c", Some("x"), None),
            file("d", Some("/run/secrets/x"), None),
            file("Bad Name", None, None),
        ];
        check_file_refs(&mut p, "spec.secrets", &refs, FileKind::Secret, &mut seen);
        let text =
            p.0.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n");
        for expected in [
            "spec.secrets[0].target",
            "spec.secrets[1].mode",
            "spec.secrets[3].target: /run/secrets/x is taken twice",
            "spec.secrets[4].name",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
        assert!(!text.contains("spec.secrets[2]"), "{text}");
    }
}
