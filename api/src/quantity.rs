//! Durations (`500ms`, `5s`, `1m30s`) and sizes (`10m`, `1g`) as manifests spell them.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a string of number+unit pairs: `ns us ms s m h` (`1m30s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
}

/// Every duration field (delays, intervals, timeouts) is bounded: 99999999999h would
/// overflow the timers that use it.
const MAX_DURATION_NANOS: u128 = 8760 * 3_600_000_000_000;

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a duration (examples: 500ms, 5s, 1m30s, 2h)");
        let s = text.trim();
        if s.is_empty() {
            return Err(bad());
        }
        if s == "0" {
            return Ok(Duration::default());
        }
        let mut total: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad());
            }
            let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let nanos_per: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(nanos_per)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if total > MAX_DURATION_NANOS {
            return Err(format!(
                "{text:?} is longer than a year (8760h), the longest any duration may be"
            ));
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
        Ok(Duration(std::time::Duration::new(
            secs,
            (total % 1_000_000_000) as u32,
        )))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.as_millis();
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}ns", d.as_nanos());
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = d.as_secs();
        if s == 0 {
            write!(f, "0s")
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The JSON Schema `format` of a [`Duration`] string, checked by its parser.
pub const DURATION_FORMAT: &str = "duration";
/// The JSON Schema `format` of a [`ByteSize`] string, checked by its parser.
pub const BYTE_SIZE_FORMAT: &str = "byte-size";

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": DURATION_FORMAT,
            "pattern": "^([0-9]+(ns|us|µs|ms|s|m|h))+$|^0$",
            "description": "A duration such as 500ms, 5s, 1m30s or 2h"
        })
    }
}

/// A size in bytes written as a number with an optional binary suffix: `k m g t`
/// (`10m` is 10 MiB). A plain number is bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a size (examples: 512k, 10m, 1g)");
        let s = text.trim().to_ascii_lowercase();
        let s = s.strip_suffix('b').unwrap_or(&s);
        let s = s.strip_suffix('i').unwrap_or(s);
        let (digits, shift) = match s.chars().last() {
            Some('k') => (&s[..s.len() - 1], 10),
            Some('m') => (&s[..s.len() - 1], 20),
            Some('g') => (&s[..s.len() - 1], 30),
            Some('t') => (&s[..s.len() - 1], 40),
            _ => (s, 0),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, shift) in [("t", 40), ("g", 30), ("m", 20), ("k", 10)] {
            let unit = 1u64 << shift;
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": BYTE_SIZE_FORMAT,
            "pattern": "^[0-9]+([kKmMgGtT]i?[bB]?)?$",
            "description": "A size such as 512k, 10m or 1g"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<Duration>().map(|d| d.0);
        assert_eq!(d("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(d("5s"), Ok(std::time::Duration::from_secs(5)));
        assert_eq!(d("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert!(d("5").is_err());
        assert!(d("s").is_err());
        assert!(d("5x").is_err());
        assert!(d("99999999999999999999999h").is_err());
        assert!(d("99999999999h").is_err(), "beyond a year");
        assert_eq!(
            d("8760h"),
            Ok(std::time::Duration::from_secs(8760 * 3600)),
            "a year is allowed"
        );
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert_eq!(Duration::from_secs(120).to_string(), "2m");
    }

    #[test]
    fn sizes() {
        let b = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(b("10m"), Ok(10 << 20));
        assert_eq!(b("1g"), Ok(1 << 30));
        assert_eq!(b("1Gi"), Ok(1 << 30));
        assert_eq!(b("512"), Ok(512));
        assert!(b("m").is_err());
        assert!(b("-1k").is_err());
        assert_eq!(ByteSize(10 << 20).to_string(), "10m");
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in ".{0,40}") {
            let _ = s.parse::<Duration>();
            let _ = s.parse::<ByteSize>();
        }

        #[test]
        fn duration_round_trips(ms in 0u64..10_000_000_000) {
            let d = Duration(std::time::Duration::from_millis(ms));
            prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }
    }
}
