//! The kinds shoal stores. Each has `apiVersion`, `kind`, `metadata`, a `spec` the user
//! owns and a `status` the system owns; Event carries its fields at the top level, as
//! in Kubernetes.

mod container;
mod event;
mod gitsync;
mod logpipeline;
mod logpipeline_check;
mod network;
mod node;
mod service;
mod task;
mod value;
mod workload;

pub use container::{parse_link, ContainerSpec, LogOptions, Mount, MountType};
pub use event::{Event, EventType, ObjectReference};
pub use gitsync::{
    GitSync, GitSyncSpec, GitSyncStatus, InventoryEntry, SyncRecord, GITSYNC_LABEL,
    RECONCILE_ANNOTATION, SYNC_REQUEST_ANNOTATION,
};
pub use logpipeline::*;
pub use network::{
    parse_cidr, Network, NetworkAttachment, NetworkDriver, NetworkRef, NetworkSpec, NetworkStatus,
    NodeAddress, ServiceVip, INGRESS_NETWORK,
};
pub use node::{Availability, Node, NodeResources, NodeRole, NodeSpec, NodeState, NodeStatus};
pub use service::{
    parse_schedule, RevisionRecord, Service, ServiceSpec, ServiceStatus, UpdateState, UpdateStatus,
};
pub use task::{
    all_attached, Attachment, DesiredState, Health, Task, TaskSpec, TaskState, TaskStatus,
    START_ANNOTATION,
};
pub use value::{
    Config, FileKind, FileRef, Secret, ValueSpec, ValueStatus, MAX_VALUE_BYTES, SECRETS_DIR,
};
pub use workload::*;

/// Defines a spec/status kind: the struct, its `Resource` impl and the checks every
/// kind shares (kind name, metadata), then the spec's own `Validate`.
macro_rules! define_kind {
    (
        $(#[$doc:meta])*
        $name:ident {
            kind: $kind:literal,
            plural: $plural:literal,
            short: [$($short:literal),*],
            spec: $spec:ty,
            status: $status:ty,
            dotted_names: $dots:expr
            $(, user_writable: $writable:literal)? $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            pub api_version: $crate::meta::ApiVersion,
            #[schemars(extend("const" = $kind))]
            pub kind: String,
            pub metadata: $crate::meta::ObjectMeta,
            #[serde(default)]
            pub spec: $spec,
            /// Written by the system; ignored when applied.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        impl $name {
            pub fn new(name: impl Into<String>, spec: $spec) -> Self {
                $name {
                    api_version: $crate::meta::ApiVersion::V1,
                    kind: $kind.to_string(),
                    metadata: $crate::meta::ObjectMeta::named(name),
                    spec,
                    status: None,
                }
            }
        }

        impl $crate::object::Resource for $name {
            const KIND: &'static str = $kind;
            const PLURAL: &'static str = $plural;
            const SHORT: &'static [&'static str] = &[$($short),*];
            $(const USER_WRITABLE: bool = $writable;)?
            fn metadata(&self) -> &$crate::meta::ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut $crate::meta::ObjectMeta {
                &mut self.metadata
            }
        }

        impl $crate::validate::Validate for $name {
            fn validate(&self, p: &mut $crate::validate::Problems) {
                if self.kind != $kind {
                    p.push("kind", format!("expected {:?}, found {:?}", $kind, self.kind));
                }
                self.metadata.validate(p, $dots);
                self.spec.validate(p);
            }
        }
    };
}
pub(crate) use define_kind;

/// Reports an empty required string field.
pub(crate) fn require(p: &mut crate::validate::Problems, path: &str, value: &str) {
    if value.trim().is_empty() {
        p.push(path, "required field is missing");
    }
}
