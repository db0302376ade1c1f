//! JSON as the API reads it from clients: like `serde_json::from_str`, except that an
//! object with the same key twice is an error, where serde_json keeps the last one
//! silently (two `image` keys would apply the one the user did not look at).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `text`, refusing duplicate keys at any depth.
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Strict>(text).map(|s| s.0)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = from_str(r#"{"spec": {"image": "a", "image": "b"}}"#).expect_err("duplicate");
        assert!(e.to_string().contains("duplicate key \"image\""), "{e}");
        assert!(
            from_str(r#"[{"a": 1}, {"a": 2}]"#).is_ok(),
            "siblings may share keys"
        );
    }

    proptest! {
        /// Without duplicates it reads what serde_json reads.
        #[test]
        fn reads_as_serde_json_does(v in any::<Vec<(String, i64)>>(), f in any::<f64>()) {
            let map: Map<String, Value> = v.into_iter().map(|(k, n)| (k, Value::from(n))).collect();
            let value = serde_json::json!({"m": map, "f": if f.is_finite() { Value::from(f) } else { Value::Null }, "l": [true, null, "x"]});
            let text = value.to_string();
            prop_assert_eq!(from_str(&text).expect("parses"), serde_json::from_str::<Value>(&text).expect("parses"));
        }
    }
}
