//! Formatters: how an output writes an event. `json` (the record as a JSON object,
//! one per line: NDJSON), `ltsv` (`key:value` pairs separated by tabs), `msgpack`
//! (the record as MessagePack), `single_value` (one field's text, Fluentd's
//! `message_key`, `log` by default as task logs have it).

use rmpv::Value;

use crate::event::Event;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Json,
    Ltsv,
    Msgpack,
    SingleValue { key: String },
}

/// A MessagePack value as JSON: binary and extensions (which JSON lacks) as text.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        Value::F32(f) => J::from(f64::from(*f)),
        Value::F64(f) => J::from(*f),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(m.iter().map(|(k, v)| (key_text(k), to_json(v))).collect()),
        Value::Ext(t, data) => J::String(format!("ext{t}:{}", hex(data))),
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => other.to_string(),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        other => to_json(other).to_string(),
    }
}

impl Format {
    /// `event` as this format writes it, ending with a newline where the format
    /// is line-based.
    pub fn write(&self, event: &Event, out: &mut Vec<u8>) {
        match self {
            Format::Json => {
                let _ = serde_json::to_writer(&mut *out, &to_json(&event.record));
                out.push(b'\n');
            }
            Format::Ltsv => {
                if let Value::Map(pairs) = &event.record {
                    let fields: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| {
                            format!("{}:{}", ltsv_escape(&key_text(k)), ltsv_escape(&plain(v)))
                        })
                        .collect();
                    out.extend_from_slice(fields.join("\t").as_bytes());
                }
                out.push(b'\n');
            }
            Format::Msgpack => {
                let _ = rmpv::encode::write_value(out, &event.record);
            }
            Format::SingleValue { key } => {
                let value = match &event.record {
                    Value::Map(p) => p
                        .iter()
                        .find(|(k, _)| k.as_str() == Some(key))
                        .map(|(_, v)| plain(v)),
                    _ => None,
                };
                let value = value.unwrap_or_default();
                out.extend_from_slice(value.as_bytes());
                if !value.ends_with('\n') {
                    out.push(b'\n');
                }
            }
        }
    }
}

/// LTSV has no quoting: a tab or newline inside a value would end it.
fn ltsv_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn event() -> Event {
        Event {
            tag: "t".into(),
            time: EventTime::default(),
            record: Value::Map(vec![
                (Value::from("log"), Value::from("a\tb\n")),
                (Value::from("n"), Value::from(3)),
                (
                    Value::from("nested"),
                    Value::Map(vec![(Value::from("ok"), Value::Boolean(true))]),
                ),
            ]),
        }
    }

    fn written(f: Format) -> Vec<u8> {
        let mut out = Vec::new();
        f.write(&event(), &mut out);
        out
    }

    #[test]
    fn each_format_writes_the_record() {
        assert_eq!(
            String::from_utf8(written(Format::Json)).expect("utf8"),
            "{\"log\":\"a\\tb\\n\",\"n\":3,\"nested\":{\"ok\":true}}\n"
        );
        assert_eq!(
            String::from_utf8(written(Format::Ltsv)).expect("utf8"),
            "log:a\\tb\\n\tn:3\tnested:{\"ok\":true}\n"
        );
        assert_eq!(
            written(Format::SingleValue { key: "log".into() }),
            b"a\tb\n".to_vec(),
            "a value that ends its line is not given another newline"
        );
        let back = rmpv::decode::read_value(&mut &written(Format::Msgpack)[..]).expect("msgpack");
        assert_eq!(back, event().record);
    }
}
