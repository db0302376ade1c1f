use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{ApiVersion, ObjectMeta, Timestamp};
use crate::object::Resource;
use crate::validate::{Problems, Validate};

/// Something a controller did or saw, for users: `shoal events`, `shoal describe`.
/// Repeats of the same reason and message on one object are merged by `count`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    pub api_version: ApiVersion,
    #[schemars(extend("const" = "Event"))]
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub involved_object: ObjectReference,
    pub count: u32,
    pub first_timestamp: Timestamp,
    pub last_timestamp: Timestamp,
    /// The component that reported it (`service-controller`).
    #[serde(default)]
    pub source: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        })
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Resource for Event {
    const KIND: &'static str = "Event";
    const PLURAL: &'static str = "events";
    const SHORT: &'static [&'static str] = &["ev"];
    const USER_WRITABLE: bool = false;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Validate for Event {
    fn validate(&self, p: &mut Problems) {
        self.metadata.validate(p, true);
        if self.reason.is_empty() {
            p.push("reason", "required field is missing");
        }
    }
}
