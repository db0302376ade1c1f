use std::time::{Duration, Instant};

use proptest::prelude::*;
use rmpv::Value;

use super::multiline::Multiline;
use super::syslog::{self, Framing};
use super::*;

fn get<'a>(record: &'a Value, key: &str) -> Option<&'a Value> {
    match record {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

#[test]
fn json_objects_keep_their_types_and_other_json_is_refused() {
    let p = Parser::Json
        .parse(r#"{"level":"info","n":3,"nested":{"ok":true}}"#)
        .expect("json");
    assert_eq!(field(&p.record, "level"), Some("info"));
    assert_eq!(get(&p.record, "n"), Some(&Value::from(3)));
    assert!(matches!(get(&p.record, "nested"), Some(Value::Map(_))));
    assert!(Parser::Json.parse("[1,2]").is_err());
    assert!(Parser::Json.parse("plain text").is_err());
}

#[test]
fn regex_captures_become_fields() {
    let p = Parser::regex(r"^(?P<level>\w+) (?P<msg>.*)$").expect("pattern");
    let r = p.parse("WARN disk almost full").expect("match");
    assert_eq!(field(&r.record, "level"), Some("WARN"));
    assert_eq!(field(&r.record, "msg"), Some("disk almost full"));
    assert_eq!(p.parse("").unwrap_err(), ParseError::NoMatch);
    assert!(Parser::regex(r"^\w+$").is_err(), "no named capture");
    assert!(Parser::regex(r"(?P<a>").is_err(), "bad regex");
}

#[test]
fn logfmt_reads_quotes_escapes_and_flags() {
    let r = parse_logfmt(r#"level=info msg="hello \"world\"" took=3ms debug"#).expect("logfmt");
    assert_eq!(field(&r, "level"), Some("info"));
    assert_eq!(field(&r, "msg"), Some(r#"hello "world""#));
    assert_eq!(field(&r, "took"), Some("3ms"));
    assert_eq!(get(&r, "debug"), Some(&Value::Boolean(true)));
    assert!(parse_logfmt(r#"msg="never closed"#).is_err());
    assert!(parse_logfmt("=value").is_err());
}

#[test]
fn syslog_5424_with_structured_data_and_nanoseconds() {
    let p = syslog::parse(
        r#"<165>1 2026-12-04T05:06:07.123456789Z web-1 api 1234 ID47 [ex@32473 iut="3" note="a \"]\" b"] Request done"#,
    )
    .expect("5424");
    let r = &p.record;
    assert_eq!(get(r, "pri"), Some(&Value::from(165)));
    assert_eq!(field(r, "facility"), Some("local4"));
    assert_eq!(field(r, "severity"), Some("notice"));
    assert_eq!(field(r, "host"), Some("web-1"));
    assert_eq!(field(r, "ident"), Some("api"));
    assert_eq!(field(r, "pid"), Some("1234"));
    assert_eq!(field(r, "msgid"), Some("ID47"));
    assert_eq!(
        field(r, "extradata"),
        Some(r#"[ex@32473 iut="3" note="a \"]\" b"]"#)
    );
    assert_eq!(field(r, "message"), Some("Request done"));
    assert_eq!(p.time.map(|t| t.nanos), Some(123_456_789));
    let nil = syslog::parse("<14>1 - - - - - - just this").expect("nil fields");
    assert_eq!(field(&nil.record, "message"), Some("just this"));
    assert_eq!(nil.time, None);
}

#[test]
fn syslog_3164_with_and_without_a_host() {
    let p = syslog::parse("<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed").expect("3164");
    assert_eq!(field(&p.record, "host"), Some("mymachine"));
    assert_eq!(field(&p.record, "ident"), Some("su"));
    assert_eq!(field(&p.record, "pid"), Some("230"));
    assert_eq!(field(&p.record, "message"), Some("'su root' failed"));
    assert_eq!(field(&p.record, "severity"), Some("crit"));
    assert!(p.time.is_some());
    let bare = syslog::parse("<13>Dec  4 05:06:07 app: hello").expect("no host");
    assert_eq!(field(&bare.record, "host"), None);
    assert_eq!(field(&bare.record, "ident"), Some("app"));
    for bad in [
        "no pri",
        "<>x",
        "<999>1 - - - - - -",
        "<13>Dec",
        "<13>1 notatime h a p m - x",
    ] {
        assert!(syslog::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn tcp_frames_are_octet_counted_or_newline_ended_and_wait_when_cut() {
    let stream = b"11 <13>1 - - x\n<13>1 - - - - - - two\n17 <13>1 - - - - -";
    let (msgs, used) = syslog::frames(stream, 1024).expect("frames");
    assert_eq!(
        msgs,
        vec![
            (Framing::OctetCounting, "<13>1 - - x".to_string()),
            (Framing::NonTransparent, "<13>1 - - - - - - two".to_string()),
        ]
    );
    assert_eq!(
        &stream[used..],
        b"17 <13>1 - - - - -",
        "the cut message waits"
    );
    assert!(
        syslog::frames(b"99999999 x", 1024).is_err(),
        "over the limit"
    );
    assert!(
        syslog::frames(&[b'x'; 2000], 1024).is_err(),
        "a line over the limit"
    );
}

#[test]
fn multiline_joins_a_trace_under_its_first_line() {
    let start = regex::Regex::new(r"^\d{4}-").expect("re");
    let mut m = Multiline::new(start, Duration::from_millis(500), 1 << 20);
    let t0 = Instant::now();
    assert_eq!(m.push("2026-12-04 ERROR boom", t0), None);
    assert_eq!(m.push("  at a()", t0), None);
    assert_eq!(m.push("  at b()", t0), None);
    assert_eq!(
        m.push("2026-12-04 INFO next", t0).as_deref(),
        Some("2026-12-04 ERROR boom\n  at a()\n  at b()")
    );
    assert_eq!(m.due(t0 + Duration::from_millis(100)), None);
    assert_eq!(
        m.due(t0 + Duration::from_millis(600)).as_deref(),
        Some("2026-12-04 INFO next"),
        "flushed when quiet"
    );
    assert_eq!(m.flush(), None);
}

proptest! {
    #[test]
    fn no_line_makes_a_parser_panic(line in "\\PC{0,200}") {
        let _ = Parser::Json.parse(&line);
        let _ = Parser::Logfmt.parse(&line);
        let _ = Parser::Syslog.parse(&line);
        let _ = syslog::parse(&format!("<13>1 {line}"));
        let _ = syslog::parse(&format!("<13>{line}"));
    }

    #[test]
    fn no_bytes_make_the_syslog_framer_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = syslog::frames(&bytes, 128);
    }

    #[test]
    fn logfmt_reads_back_what_it_would_write(
        pairs in prop::collection::vec(("[a-z_]{1,8}", "[ -~]{0,12}"), 1..6),
    ) {
        let line: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let r = parse_logfmt(&line.join(" ")).expect("parses");
        for (k, v) in &pairs {
            let got = match &r {
                Value::Map(p) => p.iter().rev().find(|(key, _)| key.as_str() == Some(k)).and_then(|(_, v)| v.as_str()),
                _ => None,
            };
            let last = pairs.iter().rev().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_str());
            prop_assert_eq!(got, last);
            let _ = v;
        }
    }
}
