//! The forward protocol against what clients send: every mode round-trips with
//! nanosecond times and nested records, messages split anywhere on the wire decode
//! once whole, and no bytes whatever make the decoder panic.

use proptest::prelude::*;
use rmpv::Value;
use shoal_logs::forward::{ack, decode, encode_events, ForwardError, Mode};
use shoal_logs::{Event, EventTime};

const LIMIT: usize = 1 << 20;

fn record(i: u32) -> Value {
    Value::Map(vec![
        (Value::from("log"), Value::from(format!("line {i}"))),
        (
            Value::from("nested"),
            Value::Map(vec![(
                Value::from("list"),
                Value::Array(vec![Value::from(i), Value::Nil, Value::F64(0.5)]),
            )]),
        ),
    ])
}

fn events(n: u32) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            tag: "app.web".into(),
            time: EventTime {
                secs: 1_700_000_000 + i,
                nanos: 123_456_789,
            },
            record: record(i),
        })
        .collect()
}

/// Every message in `bytes`, decoded one after another.
fn decode_all(mut bytes: &[u8]) -> Result<(Vec<Event>, Vec<Option<String>>), ForwardError> {
    let (mut all, mut chunks) = (Vec::new(), Vec::new());
    while !bytes.is_empty() {
        let (msg, used) = decode(bytes, LIMIT)?.expect("a whole message");
        all.extend(msg.events);
        chunks.push(msg.chunk);
        bytes = &bytes[used..];
    }
    Ok((all, chunks))
}

#[test]
fn every_mode_round_trips_with_nanoseconds_and_chunks() {
    let sent = events(5);
    for mode in [
        Mode::Message,
        Mode::Forward,
        Mode::PackedForward,
        Mode::CompressedPackedForward,
    ] {
        let bytes = encode_events("app.web", &sent, mode, Some("c2hvYWw="));
        let (got, chunks) = decode_all(&bytes).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(got, sent, "{mode:?}");
        assert!(
            chunks.iter().all(|c| c.as_deref() == Some("c2hvYWw=")),
            "{mode:?}"
        );
    }
}

#[test]
fn a_message_split_anywhere_waits_for_the_rest() {
    let bytes = encode_events("app.web", &events(3), Mode::Forward, None);
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut], LIMIT), Ok(None), "cut at {cut}");
    }
}

#[test]
fn integer_seconds_are_times_too_and_the_ack_echoes_the_chunk() {
    let msg = Value::Array(vec![
        Value::from("old.client"),
        Value::from(1_700_000_000u32),
        record(1),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &msg).expect("encode");
    let (m, _) = decode(&bytes, LIMIT).expect("decodes").expect("whole");
    assert_eq!(
        m.events[0].time,
        EventTime {
            secs: 1_700_000_000,
            nanos: 0
        }
    );
    let ack = rmpv::decode::read_value(&mut &ack("abc")[..]).expect("ack");
    assert_eq!(
        ack,
        Value::Map(vec![(Value::from("ack"), Value::from("abc"))])
    );
}

#[test]
fn bad_messages_say_what_is_wrong() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::from(1), "not an integer"),
        (
            Value::Array(vec![Value::from(""), Value::Array(vec![])]),
            "tag",
        ),
        (
            Value::Array(vec![Value::from("t"), Value::from(1), Value::from("x")]),
            "record must be a map",
        ),
        (
            Value::Array(vec![Value::from("t"), Value::Nil, record(0)]),
            "time must be",
        ),
        (
            Value::Array(vec![Value::from("t"), Value::Array(vec![Value::from(1)])]),
            "entry 0",
        ),
        (
            Value::Array(vec![
                Value::from("t"),
                Value::Binary(vec![1, 2]),
                Value::Map(vec![(Value::from("compressed"), Value::from("zstd"))]),
            ]),
            "compressed",
        ),
    ];
    for (value, says) in cases {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).expect("encode");
        let err = decode(&bytes, LIMIT).expect_err("refused").to_string();
        let says = if says == "not an integer" {
            "an integer"
        } else {
            says
        };
        assert!(err.contains(says), "{value}: {err}");
    }
}

#[test]
fn a_gzip_bomb_is_refused_at_the_limit() {
    let mut big = events(1).remove(0);
    big.record = Value::Map(vec![(Value::from("log"), Value::from("a".repeat(4 << 20)))]);
    let bytes = encode_events("t", &[big], Mode::CompressedPackedForward, None);
    assert!(bytes.len() < LIMIT, "small on the wire: {}", bytes.len());
    assert_eq!(decode(&bytes, LIMIT), Err(ForwardError::TooLarge(LIMIT)));
}

proptest! {
    #[test]
    fn no_bytes_make_the_decoder_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, 4096);
    }

    #[test]
    fn mangled_messages_never_panic(flip in 0usize..400, to in any::<u8>(), mode in 0usize..4) {
        let mode = [Mode::Message, Mode::Forward, Mode::PackedForward, Mode::CompressedPackedForward][mode];
        let mut bytes = encode_events("app.web", &events(3), mode, Some("x"));
        let at = flip % bytes.len();
        bytes[at] = to;
        let _ = decode(&bytes, LIMIT);
    }
}

/// A buffer record as the file buffer writes it: `[tag, time, record]`.
fn buffer_record(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(
        &mut out,
        &Value::Array(vec![
            Value::from(e.tag.as_str()),
            e.time.to_value(),
            e.record.clone(),
        ]),
    )
    .expect("encode");
    out
}

#[test]
fn buffer_records_become_packed_forward_without_decoding_one_message_per_tag() {
    let mut all = events(5);
    for e in &mut all[3..] {
        e.tag = "app.db".into();
    }
    let records: Vec<Vec<u8>> = all.iter().map(buffer_record).collect();
    let bodies: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let mut n = 0;
    let messages = shoal_logs::forward::packed_from_records(&bodies, || {
        n += 1;
        format!("chunk-{n}")
    });
    assert_eq!(
        messages
            .iter()
            .map(|(c, _, k)| (c.as_str(), *k))
            .collect::<Vec<_>>(),
        [("chunk-1", 3), ("chunk-2", 2)]
    );
    let mut back = Vec::new();
    for (chunk, message, _) in &messages {
        let (decoded, chunks) = decode_all(message).expect("decodes");
        assert_eq!(chunks, [Some(chunk.clone())]);
        back.extend(decoded);
    }
    assert_eq!(
        back, all,
        "tags, nanosecond times and nested records intact"
    );
}
