use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::define_kind;
use crate::meta::{Condition, Timestamp};
use crate::quantity::{ByteSize, Duration};

define_kind! {
    /// Fluentd's model on every node a selector picks: inputs (task logs, forward,
    /// HTTP, tail, syslog) whose events go through filters and, by tag, to outputs,
    /// each with its own buffer. Checked by `logpipeline_check.rs`: every field a
    /// pipeline accepts acts, and one that does not belong to its `type` is refused.
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
pub struct LogPipelineSpec {
    /// Node labels a node must have, all of them; empty: every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub inputs: Vec<LogInput>,
    /// Applied in order to every event whose tag the filter's `match` takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<LogFilter>,
    /// An event goes to the first output whose `match` takes its tag.
    #[serde(default)]
    pub outputs: Vec<LogOutput>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// The node's task output, read from the json-file logs its monitors write.
    Tasks,
    /// Fluentd's forward protocol v1 over TCP.
    Forward,
    /// `POST /TAG` with JSON, NDJSON or MessagePack, as Fluentd's in_http.
    Http,
    /// Files, followed across rotation.
    Tail,
    /// RFC 5424 and RFC 3164 over `udp://` or `tcp://`.
    Syslog,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogInput {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: InputType,
    /// tasks: a template (`task.{service}.{task}`, the default; `{node}` too);
    /// tail: the tag (`tail.<name>` by default); syslog: the first part
    /// (`syslog` by default; the facility and severity follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// tasks: which tasks (all of the node's when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<TaskSelector>,
    /// forward, http: `host:port`; syslog: `udp://host:port` or `tcp://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// tail: a file, or a glob in the file name (`/var/log/app/*.log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// tail, tasks: how a line (a task's `log` field) becomes a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parser: Option<ParserType>,
    /// The regex parser's expression; each named capture becomes a field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// tail, tasks: lines joined into one event before parsing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<MultilineSpec>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSelector {
    /// Tasks of this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Tasks carrying all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParserType {
    Json,
    /// Named captures of `pattern`.
    Regex,
    Logfmt,
    Syslog,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultilineSpec {
    /// A line matching this starts an event; the lines after it belong to it.
    pub start: String,
    /// An event ends when no line came for this long.
    #[serde(default = "one_second")]
    pub flush_timeout: Duration,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FilterType {
    /// Keeps events whose `include` fields all match and no `exclude` field does.
    Grep,
    /// `rename`, then `remove`, then `add`, then `nest`, then `lift`.
    Modify,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFilter {
    /// A tag pattern: `*` one part, `**` zero or more, `{a,b}` either.
    #[serde(rename = "match", default = "every_tag")]
    pub match_: String,
    #[serde(rename = "type")]
    pub type_: FilterType,
    /// grep: field → regex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exclude: BTreeMap<String, String>,
    /// modify: fields set (overwriting). In a string, `{node}` is the node's name,
    /// `{tag}` the event's tag and `{tag_parts[N]}` its Nth part (from 0), so with
    /// the tasks input's `task.{service}.{task}` tags, `{tag_parts[1]}` is the
    /// service and `{tag_parts[2]}` the task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// old name → new name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nest: Option<NestSpec>,
    /// A map field whose keys move to the top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NestSpec {
    /// The map the keys move under.
    pub under: String,
    pub keys: Vec<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    Stdout,
    File,
    Http,
    Forward,
    Loki,
    Elasticsearch,
    /// Sends each event on to the outputs named in `to`.
    Copy,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FormatType {
    Json,
    Ltsv,
    Msgpack,
    SingleValue,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogOutput {
    pub name: String,
    #[serde(rename = "match", default = "every_tag")]
    pub match_: String,
    #[serde(rename = "type")]
    pub type_: OutputType,
    /// http, loki (its push endpoint), elasticsearch (its `_bulk` endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// file: the file written (appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// forward: `host:port` of Fluentd, Fluent Bit or another pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// stdout, file, http: json (the default), ltsv, msgpack or single_value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatType>,
    /// single_value: the field written (`log` by default); loki: the line's field
    /// (the whole record as JSON when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_key: Option<String>,
    /// elasticsearch: the index (`shoal` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// loki: record fields that become stream labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// copy: the outputs each event goes on to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<BufferSpec>,
    /// Where chunks go that retries could not deliver (a dead-letter directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<SecondarySpec>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BufferType {
    /// Chunks on the node's disk: they survive a crash of the agent and of the node.
    #[default]
    File,
    /// Chunks in shared memory (tmpfs): they survive the agent, not the node.
    Memory,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Inputs wait: forward stops acking, tail stops reading, task logs wait on disk.
    #[default]
    Block,
    /// The oldest chunk goes, counted, with a Warning Event.
    DropOldest,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BufferSpec {
    #[serde(rename = "type", default)]
    pub type_: BufferType,
    /// How long events gather in a chunk before it is sent.
    #[serde(default = "one_second")]
    pub flush_interval: Duration,
    /// A chunk is sealed at this size.
    #[serde(default = "chunk_limit")]
    pub chunk_limit: ByteSize,
    /// All chunks together, at most; then `overflow` decides.
    #[serde(default = "total_limit")]
    pub total_limit: ByteSize,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub overflow: OverflowPolicy,
}

impl Default for BufferSpec {
    fn default() -> Self {
        BufferSpec {
            type_: BufferType::File,
            flush_interval: one_second(),
            chunk_limit: chunk_limit(),
            total_limit: total_limit(),
            retry: RetrySpec::default(),
            overflow: OverflowPolicy::Block,
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Tries per chunk, the first included; then the chunk goes to `secondary`.
    #[serde(default = "ten")]
    pub max_attempts: u32,
    /// The wait after the first failure, doubled after each (with jitter).
    #[serde(default = "one_second")]
    pub base: Duration,
    #[serde(default = "one_minute")]
    pub max_delay: Duration,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: ten(),
            base: one_second(),
            max_delay: one_minute(),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecondaryType {
    #[default]
    File,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecondarySpec {
    #[serde(rename = "type", default)]
    pub type_: SecondaryType,
    /// A directory on the node; each chunk given up on is a file in it.
    pub path: String,
}

fn every_tag() -> String {
    "**".into()
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn one_minute() -> Duration {
    Duration::from_secs(60)
}
fn ten() -> u32 {
    10
}
fn chunk_limit() -> ByteSize {
    ByteSize(8 << 20)
}
fn total_limit() -> ByteSize {
    ByteSize(512 << 20)
}

/// What the nodes running a pipeline report.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per node the pipeline runs on, by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PipelineNodeStatus>,
}

/// One node's run of a pipeline. Counters count events since the pipeline started
/// on that node (an agent restart starts them again); rates are per second over the
/// last report period.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineNodeStatus {
    pub node: String,
    /// The spec generation it runs.
    pub generation: i64,
    /// `Running`, or `Failed` with a message (an input that cannot listen, say).
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<Timestamp>,
    pub events_in: u64,
    pub events_out: u64,
    pub in_per_second: f64,
    pub out_per_second: f64,
    /// Events no filter kept, and events no output's `match` took.
    pub filtered: u64,
    pub unmatched: u64,
    pub retried: u64,
    /// Given up on after retries: in the secondary (dead-letter) directory.
    pub set_aside: u64,
    /// Dropped by `drop_oldest`.
    pub dropped: u64,
    pub buffered_bytes: u64,
    /// The age of the oldest event not yet delivered, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unsent_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<PipelineInputStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<PipelineOutputStatus>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInputStatus {
    pub name: String,
    pub events: u64,
    /// Lines the parser could not read (kept with an `error` field).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unparsed: u64,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineOutputStatus {
    pub name: String,
    pub delivered: u64,
    pub retried: u64,
    pub set_aside: u64,
    pub dropped: u64,
    pub buffered_bytes: u64,
    /// Why it is failing, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
