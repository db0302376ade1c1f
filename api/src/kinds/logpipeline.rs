use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::define_kind;
use crate::meta::Condition;
use crate::validate::{Problems, Validate};

define_kind! {
    /// Where task logs are shipped (Fluentd forward and friends). Its spec fields arrive
    /// with the log-shipping work; until then the kind is stored and nothing more, so it
    /// accepts no spec fields rather than ones that would do nothing.
    LogPipeline {
        kind: "LogPipeline",
        plural: "logpipelines",
        short: ["lp"],
        spec: LogPipelineSpec,
        status: LogPipelineStatus,
        dotted_names: false,
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogPipelineSpec {}

impl Validate for LogPipelineSpec {
    fn validate(&self, _: &mut Problems) {}
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
