//! syslog messages, RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) and
//! RFC 3164 (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`), into records with Fluentd's
//! field names (`pri`, `facility`, `severity`, `host`, `ident`, `pid`, `msgid`,
//! `extradata`, `message`); and the two ways a TCP stream frames them (RFC 6587:
//! octet counting `LEN SP MSG`, or a newline after each).
//!
//! RFC 3164 has no year and no zone: the year is the current one (the previous one if
//! that would put the message more than a day ahead) and the zone UTC.

use chrono::{Datelike, TimeZone, Utc};
use rmpv::Value;

use super::{ParseError, Parsed};
use crate::event::EventTime;

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug",
];

fn bad(why: impl Into<String>) -> ParseError {
    ParseError::Syslog(why.into())
}

pub fn parse(line: &str) -> Result<Parsed, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let rest = line
        .strip_prefix('<')
        .ok_or_else(|| bad("a message starts with <PRI>"))?;
    let end = rest
        .find('>')
        .filter(|&e| (1..=3).contains(&e))
        .ok_or_else(|| bad("<PRI> is one to three digits"))?;
    let pri: u8 = rest[..end]
        .parse()
        .ok()
        .filter(|p| *p < 192)
        .ok_or_else(|| bad("PRI is a number below 192"))?;
    let rest = &rest[end + 1..];
    let mut fields = vec![
        ("pri", Value::from(pri)),
        ("facility", Value::from(FACILITIES[usize::from(pri / 8)])),
        ("severity", Value::from(SEVERITIES[usize::from(pri % 8)])),
    ];
    let time = match rest.strip_prefix("1 ") {
        Some(v1) => rfc5424(v1, &mut fields)?,
        None => rfc3164(rest, &mut fields)?,
    };
    Ok(Parsed {
        record: Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        ),
        time,
    })
}

/// The next space-separated token and what follows it.
fn token(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((t, rest)) => (t, rest),
        None => (s, ""),
    }
}

fn rfc5424(
    s: &str,
    fields: &mut Vec<(&'static str, Value)>,
) -> Result<Option<EventTime>, ParseError> {
    let (stamp, s) = token(s);
    let time = if stamp == "-" {
        None
    } else {
        let t = chrono::DateTime::parse_from_rfc3339(stamp)
            .map_err(|e| bad(format!("timestamp {stamp:?}: {e}")))?;
        Some(event_time(t.timestamp(), t.timestamp_subsec_nanos())?)
    };
    let mut s = s;
    for name in ["host", "ident", "pid", "msgid"] {
        let (t, rest) = token(s);
        if t.is_empty() {
            return Err(bad(format!(
                "no {name} (RFC 5424 has HOSTNAME APP-NAME PROCID MSGID, '-' when absent)"
            )));
        }
        if t != "-" {
            fields.push((name, Value::from(t)));
        }
        s = rest;
    }
    let (sd, msg) = structured_data(s)?;
    if sd != "-" {
        fields.push(("extradata", Value::from(sd)));
    }
    // A message may start with a UTF-8 byte-order mark (RFC 5424 §6.4).
    fields.push(("message", Value::from(msg.trim_start_matches('\u{feff}'))));
    Ok(time)
}

/// STRUCTURED-DATA (`-` or `[id k="v" ...]...`, quotes escaped by `\`) and the rest.
fn structured_data(s: &str) -> Result<(&str, &str), ParseError> {
    if let Some(rest) = s.strip_prefix('-') {
        return Ok(("-", rest.strip_prefix(' ').unwrap_or(rest)));
    }
    let bytes = s.as_bytes();
    let (mut i, mut quoted, mut depth) = (0, false, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'[' if !quoted => depth += 1,
            b']' if !quoted => {
                depth -= 1;
                if depth == 0 && bytes.get(i + 1) != Some(&b'[') {
                    let rest = &s[i + 1..];
                    return Ok((&s[..=i], rest.strip_prefix(' ').unwrap_or(rest)));
                }
            }
            _ if depth == 0 => return Err(bad("STRUCTURED-DATA is '-' or [id ...]")),
            _ => {}
        }
        i += 1;
    }
    Err(bad("STRUCTURED-DATA never closes its ']'"))
}

fn rfc3164(
    s: &str,
    fields: &mut Vec<(&'static str, Value)>,
) -> Result<Option<EventTime>, ParseError> {
    // "Mmm dd hh:mm:ss " (the day padded with a space)
    let stamp = s
        .get(..15)
        .ok_or_else(|| bad("no RFC 3164 timestamp (Mmm dd hh:mm:ss)"))?;
    let now = Utc::now();
    let parse = |year: i32| {
        chrono::NaiveDateTime::parse_from_str(&format!("{year} {stamp}"), "%Y %b %e %H:%M:%S")
    };
    let t = parse(now.year()).map_err(|e| bad(format!("timestamp {stamp:?}: {e}")))?;
    let mut t = Utc.from_utc_datetime(&t);
    if t > now + chrono::Duration::days(1) {
        let last_year = parse(now.year() - 1).map_err(|e| bad(e.to_string()))?;
        t = Utc.from_utc_datetime(&last_year);
    }
    let s = s[15..].trim_start();
    let (first, after) = token(s);
    // A host, unless the sender left it out and this is already the tag.
    let (host, s) = if first.ends_with(':') || first.contains('[') {
        (None, s)
    } else {
        (Some(first), after)
    };
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        fields.push(("host", Value::from(h)));
    }
    let (tag, msg) = match s.split_once(": ") {
        Some((tag, msg)) if !tag.contains(' ') => (Some(tag), msg),
        _ => (None, s),
    };
    if let Some(tag) = tag {
        match tag.split_once('[') {
            Some((ident, pid)) => {
                fields.push(("ident", Value::from(ident)));
                fields.push(("pid", Value::from(pid.trim_end_matches(']'))));
            }
            None => fields.push(("ident", Value::from(tag))),
        }
    }
    fields.push(("message", Value::from(msg)));
    Ok(Some(event_time(t.timestamp(), t.timestamp_subsec_nanos())?))
}

fn event_time(secs: i64, nanos: u32) -> Result<EventTime, ParseError> {
    let secs = u32::try_from(secs).map_err(|_| bad("a time before 1970 or after 2106"))?;
    Ok(EventTime { secs, nanos })
}

/// How a TCP stream of syslog messages is framed (RFC 6587).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `LEN SP MSG`: what `logger --octet-count` and rsyslog's omfwd send.
    OctetCounting,
    /// A newline after each message.
    NonTransparent,
}

/// The messages whole at the start of `buf` and how many bytes they took; framing
/// is told per message by its first byte (a digit: octet counting). A message over
/// `limit` bytes is an error, so a stream cannot grow the buffer without end.
pub fn frames(buf: &[u8], limit: usize) -> Result<(Vec<(Framing, String)>, usize), ParseError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest[0].is_ascii_digit() {
            let Some(sp) = rest.iter().take(11).position(|b| *b == b' ') else {
                if rest.len() > 10 {
                    return Err(bad("octet counting: no length before the message"));
                }
                break;
            };
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad("octet counting: the length is not a number"))?;
            if len > limit {
                return Err(bad(format!(
                    "a message of {len} bytes; the limit is {limit}"
                )));
            }
            let Some(msg) = rest.get(sp + 1..sp + 1 + len) else {
                break;
            };
            out.push((
                Framing::OctetCounting,
                String::from_utf8_lossy(msg).into_owned(),
            ));
            at += sp + 1 + len;
        } else {
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                if rest.len() > limit {
                    return Err(bad(format!("a line longer than {limit} bytes")));
                }
                break;
            };
            let line = String::from_utf8_lossy(&rest[..nl])
                .trim_end_matches('\r')
                .to_string();
            if !line.is_empty() {
                out.push((Framing::NonTransparent, line));
            }
            at += nl + 1;
        }
    }
    Ok((out, at))
}
