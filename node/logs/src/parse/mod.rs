//! Parsers: a line of text into a record (a MessagePack map), as Fluentd's
//! `<parse>` does. `json`, `regex` (named captures become fields), `logfmt`,
//! `syslog` (RFC 5424 and RFC 3164, `syslog.rs`), and `multiline` (`multiline.rs`),
//! which joins lines into events before one of the others parses them. A line a
//! parser cannot read is an error the pipeline counts and keeps (as `{"log": line}`
//! with the error), never a panic and never a silent drop.

mod logfmt;
pub mod multiline;
pub mod syslog;

use regex::Regex;
use rmpv::Value;
use thiserror::Error;

use crate::event::EventTime;

pub use logfmt::parse_logfmt;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("the line does not match the pattern")]
    NoMatch,
    #[error("logfmt: {0}")]
    Logfmt(String),
    #[error("syslog: {0}")]
    Syslog(String),
    #[error("pattern {0}")]
    Pattern(String),
}

/// A parsed line: its record, and its own time when the line carried one.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub record: Value,
    pub time: Option<EventTime>,
}

/// A configured parser.
#[derive(Debug, Clone)]
pub enum Parser {
    Json,
    Regex(Regex),
    Logfmt,
    Syslog,
}

impl Parser {
    /// A regex parser; the pattern must name at least one capture.
    pub fn regex(pattern: &str) -> Result<Parser, ParseError> {
        let re = Regex::new(pattern).map_err(|e| ParseError::Pattern(e.to_string()))?;
        if re.capture_names().flatten().next().is_none() {
            return Err(ParseError::Pattern(
                "names no capture: use (?P<field>...) for each field to keep".into(),
            ));
        }
        Ok(Parser::Regex(re))
    }

    pub fn parse(&self, line: &str) -> Result<Parsed, ParseError> {
        let record = match self {
            Parser::Json => json(line)?,
            Parser::Regex(re) => {
                let caps = re.captures(line).ok_or(ParseError::NoMatch)?;
                Value::Map(
                    re.capture_names()
                        .flatten()
                        .filter_map(|name| {
                            caps.name(name)
                                .map(|m| (Value::from(name), Value::from(m.as_str())))
                        })
                        .collect(),
                )
            }
            Parser::Logfmt => parse_logfmt(line)?,
            Parser::Syslog => return syslog::parse(line),
        };
        Ok(Parsed { record, time: None })
    }
}

/// A JSON object as a MessagePack map (numbers stay integers where they are).
fn json(line: &str) -> Result<Value, ParseError> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| ParseError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(ParseError::Json("a JSON value, but not an object".into()));
    }
    Ok(from_json(v))
}

pub fn from_json(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(b),
        J::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .unwrap_or_else(|| Value::F64(n.as_f64().unwrap_or(0.0))),
        J::String(s) => Value::from(s),
        J::Array(a) => Value::Array(a.into_iter().map(from_json).collect()),
        J::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::from(k), from_json(v)))
                .collect(),
        ),
    }
}

/// A record's field `key` as text, if it is a string.
pub fn field<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    match record {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
