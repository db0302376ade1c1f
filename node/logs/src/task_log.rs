//! Task logs as events: a line of the json-file log each container's monitor writes
//! (`{"log": ..., "stream": "stdout"|"stderr", "time": RFC 3339}`, Docker's format)
//! becomes a record `{log, stream}` at the line's own time, tagged by a template
//! such as `task.{service}.{task}`.

use rmpv::Value;
use thiserror::Error;

use crate::event::{Event, EventTime};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskLogError {
    #[error("not a json-file log line: {0}")]
    Line(String),
}

/// One json-file line as an event tagged `tag`.
pub fn event(line: &str, tag: &str) -> Result<Event, TaskLogError> {
    #[derive(serde::Deserialize)]
    struct Line {
        log: String,
        stream: String,
        time: String,
    }
    let l: Line = serde_json::from_str(line).map_err(|e| TaskLogError::Line(e.to_string()))?;
    let t = chrono::DateTime::parse_from_rfc3339(&l.time)
        .map_err(|e| TaskLogError::Line(format!("time {:?}: {e}", l.time)))?;
    let secs = u32::try_from(t.timestamp())
        .map_err(|_| TaskLogError::Line(format!("time {:?} out of range", l.time)))?;
    let log = l.log.strip_suffix('\n').unwrap_or(&l.log);
    Ok(Event {
        tag: tag.to_string(),
        time: EventTime {
            secs,
            nanos: t.timestamp_subsec_nanos(),
        },
        record: Value::Map(vec![
            (Value::from("log"), Value::from(log)),
            (Value::from("stream"), Value::from(l.stream)),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_file_line_is_an_event_at_its_own_time() {
        let e = event(
            r#"{"log":"hello\n","stream":"stderr","time":"2026-12-04T05:06:07.000000042Z"}"#,
            "task.api.api_1",
        )
        .expect("event");
        assert_eq!(e.time.nanos, 42);
        assert_eq!(
            e.record,
            Value::Map(vec![
                (Value::from("log"), Value::from("hello")),
                (Value::from("stream"), Value::from("stderr")),
            ])
        );
        assert!(event("not json", "t").is_err());
        assert!(event(r#"{"log":"x","stream":"stdout","time":"yesterday"}"#, "t").is_err());
    }
}
