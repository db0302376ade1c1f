//! One log event: a tag, a time with nanoseconds, and a record (a map).

use rmpv::Value;

/// Seconds and nanoseconds since the Unix epoch: Fluentd's EventTime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EventTime {
    pub secs: u32,
    pub nanos: u32,
}

/// The MessagePack extension type Fluentd gives EventTime.
pub const EVENT_TIME_EXT: i8 = 0;

impl EventTime {
    /// The time now (the clock before 1970 or after 2106 reads as its nearest end).
    pub fn now() -> EventTime {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime {
            secs: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
            nanos: d.subsec_nanos(),
        }
    }

    /// As the forward protocol carries it: extension type 0, seconds then
    /// nanoseconds, each a big-endian u32.
    pub fn to_value(self) -> Value {
        let mut data = Vec::with_capacity(8);
        data.extend_from_slice(&self.secs.to_be_bytes());
        data.extend_from_slice(&self.nanos.to_be_bytes());
        Value::Ext(EVENT_TIME_EXT, data)
    }

    /// Writes it as [`EventTime::to_value`] encodes it (fixext 8, type 0), without
    /// building a value.
    pub fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0xd7, EVENT_TIME_EXT as u8]);
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.nanos.to_be_bytes());
    }

    /// An EventTime, or whole seconds as an integer (older clients), or a float
    /// (some libraries); None for anything else.
    pub fn from_value(v: &Value) -> Option<EventTime> {
        match v {
            Value::Ext(EVENT_TIME_EXT, data) if data.len() == 8 => {
                let secs = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let nanos = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                (nanos < 1_000_000_000).then_some(EventTime { secs, nanos })
            }
            Value::Integer(i) => i
                .as_u64()
                .and_then(|s| u32::try_from(s).ok())
                .map(|secs| EventTime { secs, nanos: 0 }),
            Value::F32(_) | Value::F64(_) => {
                let f = v.as_f64()?;
                if !(0.0..=f64::from(u32::MAX)).contains(&f) {
                    return None;
                }
                let secs = f.trunc();
                let nanos = ((f - secs) * 1e9).round().min(999_999_999.0);
                Some(EventTime {
                    secs: secs as u32,
                    nanos: nanos as u32,
                })
            }
            _ => None,
        }
    }
}

/// A log event. The record is a MessagePack map, as Fluentd's are.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tag: String,
    pub time: EventTime,
    pub record: Value,
}
