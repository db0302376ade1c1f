//! Task logs as events: a line of the json-file log each container's monitor writes
//! (`{"log": ..., "stream": "stdout"|"stderr", "time": RFC 3339}`, Docker's format)
//! becomes a record `{log, stream}` at the line's own time, tagged by a template
//! such as `task.{service}.{task}`.

use rmpv::Value;
use thiserror::Error;

use crate::event::{Event, EventTime};
use crate::tag::TagPattern;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskLogError {
    #[error("not a json-file log line: {0}")]
    Line(String),
    #[error("tag template {template:?}: {why}")]
    Template { template: String, why: String },
}

/// What a tag template may name.
pub const PLACEHOLDERS: [&str; 3] = ["service", "task", "node"];

/// A tag template, checked: placeholders it knows, and a valid tag whatever they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate(String);

impl TagTemplate {
    pub fn new(template: &str) -> Result<TagTemplate, TaskLogError> {
        let bad = |why: String| TaskLogError::Template {
            template: template.to_string(),
            why,
        };
        let mut rest = template;
        let mut sample = String::new();
        while let Some(open) = rest.find('{') {
            sample.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad("a `{` is never closed".into()))?;
            let name = &rest[open + 1..open + close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(bad(format!(
                    "unknown placeholder {{{name}}}; known: {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                )));
            }
            sample.push('x');
            rest = &rest[open + close + 1..];
        }
        sample.push_str(rest);
        // What it renders to must be a tag a pattern can name literally.
        TagPattern::new(&sample).map_err(|e| bad(e.to_string()))?;
        if sample.contains(['*', ',']) {
            return Err(bad("a tag has no `*` or `,`".into()));
        }
        Ok(TagTemplate(template.to_string()))
    }

    /// The tag for a task. Names are DNS labels (with dots for a history name); dots
    /// inside a value would add tag parts, so they become `_`.
    pub fn render(&self, service: &str, task: &str, node: &str) -> String {
        let clean = |s: &str| {
            if s.is_empty() {
                "_".to_string()
            } else {
                s.replace('.', "_")
            }
        };
        self.0
            .replace("{service}", &clean(service))
            .replace("{task}", &clean(task))
            .replace("{node}", &clean(node))
    }
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
    fn templates_render_tags_and_refuse_what_they_cannot() {
        let t = TagTemplate::new("task.{service}.{task}").expect("template");
        assert_eq!(t.render("api", "api.1", "n1"), "task.api.api_1");
        assert_eq!(t.render("", "solo", "n1"), "task._.solo");
        for bad in ["task.{svc}", "task.{service", "task..{task}", "task.*", ""] {
            assert!(TagTemplate::new(bad).is_err(), "{bad:?} accepted");
        }
        let err = TagTemplate::new("t.{pod}")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("{service}, {task}, {node}"), "{err}");
    }

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
