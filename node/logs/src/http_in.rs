//! The HTTP input's requests, as Fluentd's `in_http` takes them: `POST /TAG` (the
//! path, slashes as dots, is the tag) with a body of one JSON object, a JSON array
//! of objects, NDJSON (one object per line), or MessagePack (a map or an array of
//! maps), told apart by the content type. An event's time is the record's `time`
//! field when it is a number (seconds, fractions kept), else the request's.

use rmpv::Value;
use thiserror::Error;

use crate::event::{Event, EventTime};
use crate::parse::from_json;
use crate::tag::TagPattern;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HttpInError {
    #[error("the path names the tag: POST /app.web or /app/web, not {0:?}")]
    Tag(String),
    #[error("body: {0}")]
    Body(String),
    #[error(
        "content type {0:?}: send application/json, application/x-ndjson or application/msgpack"
    )]
    ContentType(String),
}

/// The tag a request's path names.
pub fn tag_of(path: &str) -> Result<String, HttpInError> {
    let path = path.split('?').next().unwrap_or("");
    let tag = path.trim_matches('/').replace('/', ".");
    let literal = !tag.is_empty() && !tag.contains(['*', '{', '}', ',']);
    if literal && TagPattern::new(&tag).is_ok() {
        Ok(tag)
    } else {
        Err(HttpInError::Tag(path.to_string()))
    }
}

/// The events a request carries.
pub fn events(
    path: &str,
    content_type: &str,
    body: &[u8],
    now: EventTime,
) -> Result<Vec<Event>, HttpInError> {
    let tag = tag_of(path)?;
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let records: Vec<Value> = match kind.as_str() {
        "application/json" | "" => {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| HttpInError::Body(e.to_string()))?;
            match v {
                serde_json::Value::Array(items) => items.into_iter().map(from_json).collect(),
                other => vec![from_json(other)],
            }
        }
        "application/x-ndjson" | "application/jsonlines" => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(i, l)| {
                serde_json::from_slice::<serde_json::Value>(l)
                    .map(from_json)
                    .map_err(|e| HttpInError::Body(format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<_, _>>()?,
        "application/msgpack" | "application/x-msgpack" => {
            let len = crate::frame::value_len(body, body.len())
                .map_err(|e| HttpInError::Body(e.to_string()))?
                .ok_or_else(|| HttpInError::Body("MessagePack cut short".into()))?;
            let v = rmpv::decode::read_value(&mut &body[..len])
                .map_err(|e| HttpInError::Body(e.to_string()))?;
            match v {
                Value::Array(items) => items,
                other => vec![other],
            }
        }
        other => return Err(HttpInError::ContentType(other.to_string())),
    };
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            if !matches!(record, Value::Map(_)) {
                return Err(HttpInError::Body(format!("record {i} is not an object")));
            }
            let time = own_time(&record).unwrap_or(now);
            Ok(Event {
                tag: tag.clone(),
                time,
                record,
            })
        })
        .collect()
}

fn own_time(record: &Value) -> Option<EventTime> {
    let Value::Map(pairs) = record else {
        return None;
    };
    let v = pairs
        .iter()
        .find(|(k, _)| k.as_str() == Some("time"))?
        .1
        .clone();
    match v {
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => EventTime::from_value(&v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: EventTime = EventTime {
        secs: 1_800_000_000,
        nanos: 0,
    };

    #[test]
    fn each_body_shape_gives_its_records() {
        let one = events("/app.web", "application/json", br#"{"a":1}"#, NOW).expect("object");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].tag, "app.web");
        assert_eq!(one[0].time, NOW);
        let many = events(
            "/app/web",
            "application/json; charset=utf-8",
            br#"[{"a":1},{"time":1700000000.5}]"#,
            NOW,
        )
        .expect("array");
        assert_eq!(many[0].tag, "app.web");
        assert_eq!(
            many[1].time,
            EventTime {
                secs: 1_700_000_000,
                nanos: 500_000_000
            }
        );
        let nd = events(
            "/t",
            "application/x-ndjson",
            b"{\"a\":1}\n\n{\"b\":2}\n",
            NOW,
        )
        .expect("ndjson");
        assert_eq!(nd.len(), 2);
        let mut mp = Vec::new();
        rmpv::encode::write_value(
            &mut mp,
            &Value::Array(vec![Value::Map(vec![(Value::from("a"), Value::from(1))])]),
        )
        .expect("encode");
        assert_eq!(
            events("/t", "application/msgpack", &mp, NOW)
                .expect("msgpack")
                .len(),
            1
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err =
            |p: &str, ct: &str, b: &[u8]| events(p, ct, b, NOW).expect_err("refused").to_string();
        assert!(err("/", "application/json", b"{}").contains("names the tag"));
        assert!(err("/a..b", "application/json", b"{}").contains("names the tag"));
        assert!(err("/a", "text/csv", b"x").contains("content type"));
        assert!(err("/a", "application/json", b"[1]").contains("record 0"));
        assert!(err("/a", "application/x-ndjson", b"{}\n{").contains("line 2"));
    }

    proptest! {
        #[test]
        fn no_body_makes_it_panic(body in prop::collection::vec(any::<u8>(), 0..200), kind in 0usize..3) {
            let ct = ["application/json", "application/x-ndjson", "application/msgpack"][kind];
            let _ = events("/t", ct, &body, NOW);
        }
    }
}
