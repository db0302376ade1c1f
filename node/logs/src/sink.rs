//! What the HTTP-based outputs send and how they read the answer: Loki's push API
//! (`{"streams":[{"stream":{labels},"values":[["<ns>","line"]]}]}`, one stream per
//! distinct label set) and Elasticsearch's `_bulk` API (an action line and a
//! document per event, NDJSON), whose answer says per item whether it landed: items
//! refused for a reason that passes (429, 5xx) are tried again, the others are
//! set aside with the reason, and the rest are done.

use std::collections::BTreeMap;

use rmpv::Value;
use serde_json::json;

use crate::event::Event;
use crate::format::to_json;

/// The text of a record's field, for labels and log lines.
fn text_of(record: &Value, key: &str) -> Option<String> {
    let Value::Map(pairs) = record else {
        return None;
    };
    pairs
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| match v {
            Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => to_json(other).to_string(),
        })
}

/// A Loki push body. Labels are the record fields named in `labels` (plus the tag as
/// `tag`); the line is the record's `line_key` field, or the whole record as JSON.
pub fn loki_body(events: &[Event], labels: &[String], line_key: Option<&str>) -> Vec<u8> {
    let mut streams: BTreeMap<BTreeMap<String, String>, Vec<[String; 2]>> = BTreeMap::new();
    for e in events {
        let mut set = BTreeMap::new();
        set.insert("tag".to_string(), e.tag.clone());
        for l in labels {
            if let Some(v) = text_of(&e.record, l) {
                set.insert(l.clone(), v);
            }
        }
        let line = line_key
            .and_then(|k| text_of(&e.record, k))
            .unwrap_or_else(|| to_json(&e.record).to_string());
        let ns = u64::from(e.time.secs) * 1_000_000_000 + u64::from(e.time.nanos);
        streams.entry(set).or_default().push([ns.to_string(), line]);
    }
    let body = json!({
        "streams": streams
            .into_iter()
            .map(|(stream, values)| json!({"stream": stream, "values": values}))
            .collect::<Vec<_>>()
    });
    body.to_string().into_bytes()
}

/// An Elasticsearch `_bulk` body indexing every event into `index`, with its time
/// as `@timestamp` (RFC 3339 with nanoseconds) and its tag as `tag`.
pub fn bulk_body(events: &[Event], index: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let action = json!({"index": {"_index": index}});
        let mut doc = match to_json(&e.record) {
            serde_json::Value::Object(o) => o,
            other => {
                let mut o = serde_json::Map::new();
                o.insert("message".into(), other);
                o
            }
        };
        let stamp = chrono::DateTime::from_timestamp(i64::from(e.time.secs), e.time.nanos)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_default();
        doc.entry("@timestamp").or_insert(stamp.into());
        doc.entry("tag").or_insert(e.tag.clone().into());
        let _ = serde_json::to_writer(&mut out, &action);
        out.push(b'\n');
        let _ = serde_json::to_writer(&mut out, &doc);
        out.push(b'\n');
    }
    out
}

/// What a `_bulk` answer says of the items sent, by their index in the request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// To send again (429, 5xx).
    pub retry: Vec<usize>,
    /// Refused for good, with the reason (mapping errors, bad documents).
    pub rejected: Vec<(usize, String)>,
}

/// Reads a `_bulk` answer for `sent` items. An answer that cannot be read, or that
/// lists fewer items than were sent, retries them all: nothing is taken as landed
/// without Elasticsearch saying so.
pub fn bulk_outcome(answer: &[u8], sent: usize) -> BulkOutcome {
    let all = || BulkOutcome {
        retry: (0..sent).collect(),
        rejected: Vec::new(),
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(answer) else {
        return all();
    };
    let Some(items) = v["items"].as_array().filter(|i| i.len() == sent) else {
        return all();
    };
    if v["errors"] == json!(false) {
        return BulkOutcome::default();
    }
    let mut out = BulkOutcome::default();
    for (i, item) in items.iter().enumerate() {
        let result = item
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or_default();
        let status = result["status"].as_u64().unwrap_or(0);
        match status {
            200..=299 => {}
            429 | 500..=599 | 0 => out.retry.push(i),
            _ => out.rejected.push((
                i,
                format!(
                    "{status}: {}",
                    result["error"]["reason"]
                        .as_str()
                        .or(result["error"].as_str())
                        .unwrap_or("refused")
                ),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn ev(tag: &str, service: &str, log: &str, nanos: u32) -> Event {
        Event {
            tag: tag.into(),
            time: EventTime {
                secs: 1_700_000_000,
                nanos,
            },
            record: Value::Map(vec![
                (Value::from("service"), Value::from(service)),
                (Value::from("log"), Value::from(log)),
            ]),
        }
    }

    #[test]
    fn loki_gets_one_stream_per_label_set_with_nanosecond_strings() {
        let events = [
            ev("task.api", "api", "a", 1),
            ev("task.web", "web", "b", 2),
            ev("task.api", "api", "c", 3),
        ];
        let body: serde_json::Value =
            serde_json::from_slice(&loki_body(&events, &["service".into()], Some("log")))
                .expect("json");
        assert_eq!(
            body,
            json!({"streams": [
                {"stream": {"service": "api", "tag": "task.api"},
                 "values": [["1700000000000000001", "a"], ["1700000000000000003", "c"]]},
                {"stream": {"service": "web", "tag": "task.web"},
                 "values": [["1700000000000000002", "b"]]},
            ]})
        );
    }

    #[test]
    fn a_bulk_body_pairs_an_action_with_each_document() {
        let body = String::from_utf8(bulk_body(&[ev("t", "api", "x", 5)], "logs")).expect("utf8");
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).expect("ndjson"))
            .collect();
        assert_eq!(lines[0], json!({"index": {"_index": "logs"}}));
        assert_eq!(lines[1]["@timestamp"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(lines[1]["tag"], "t");
        assert_eq!(lines[1]["log"], "x");
    }

    #[test]
    fn bulk_answers_split_into_done_retry_and_rejected() {
        let answer = json!({"errors": true, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 429, "error": {"reason": "queue full"}}},
            {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"}}},
            {"index": {"status": 503}},
        ]});
        let out = bulk_outcome(answer.to_string().as_bytes(), 4);
        assert_eq!(out.retry, vec![1, 3]);
        assert_eq!(
            out.rejected,
            vec![(2, "400: failed to parse field [n]".into())]
        );
        assert_eq!(
            bulk_outcome(b"{\"errors\":false,\"items\":[{},{}]}", 2),
            BulkOutcome::default()
        );
        assert_eq!(
            bulk_outcome(b"<html>bad gateway", 2).retry,
            vec![0, 1],
            "unreadable: all again"
        );
        assert_eq!(
            bulk_outcome(b"{\"errors\":false,\"items\":[{}]}", 2).retry,
            vec![0, 1],
            "too few items"
        );
    }
}
