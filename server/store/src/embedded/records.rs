//! Byte layouts of what the embedded store keeps in redb. Little-endian, fixed header
//! first, so decoding is a bounds check and a copy.

use crate::{EventType, KeyValue, StoreError, WatchEvent};

const HEADER: usize = 32;

/// `create_revision | mod_revision | version | lease | value..`
pub fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + kv.value.len());
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&kv.value);
    out
}

pub fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    if bytes.len() < HEADER {
        return Err(corrupt(key));
    }
    let n = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        i64::from_le_bytes(b)
    };
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: n(0),
        mod_revision: n(1),
        version: n(2),
        lease: n(3),
        value: bytes[HEADER..].to_vec(),
    })
}

/// `type(1) | key_len(4) | key | kv_len(4) | kv | prev kv (rest, may be empty)`
pub fn encode_event(ev: &WatchEvent) -> Vec<u8> {
    let kv = encode_kv(&ev.kv);
    let mut out = Vec::with_capacity(9 + ev.kv.key.len() + kv.len());
    out.push(match ev.event_type {
        EventType::Put => 0,
        EventType::Delete => 1,
    });
    out.extend_from_slice(&(ev.kv.key.len() as u32).to_le_bytes());
    out.extend_from_slice(ev.kv.key.as_bytes());
    out.extend_from_slice(&(kv.len() as u32).to_le_bytes());
    out.extend_from_slice(&kv);
    if let Some(prev) = &ev.prev {
        out.extend_from_slice(&encode_kv(prev));
    }
    out
}

pub fn decode_event(bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let bad = || corrupt("<log>");
    let event_type = match bytes.first() {
        Some(0) => EventType::Put,
        Some(1) => EventType::Delete,
        _ => return Err(bad()),
    };
    let mut at = 1;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let s = bytes.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(s)
    };
    let len = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let key_len = len(take(4)?);
    let key = std::str::from_utf8(take(key_len)?)
        .map_err(|_| bad())?
        .to_string();
    let kv_len = len(take(4)?);
    let kv = decode_kv(&key, take(kv_len)?)?;
    let rest = &bytes[at..];
    let prev = if rest.is_empty() {
        None
    } else {
        Some(decode_kv(&key, rest)?)
    };
    Ok(WatchEvent {
        event_type,
        kv,
        prev,
    })
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt record for {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let kv = KeyValue {
            key: "/a".into(),
            value: b"hello".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 2,
            lease: 7,
        };
        assert_eq!(decode_kv("/a", &encode_kv(&kv)), Ok(kv.clone()));
        let ev = WatchEvent {
            event_type: EventType::Delete,
            kv: KeyValue {
                value: vec![],
                ..kv.clone()
            },
            prev: Some(kv),
        };
        assert_eq!(decode_event(&encode_event(&ev)), Ok(ev));
        assert!(decode_event(&[0, 255, 255]).is_err());
        assert!(decode_kv("/a", &[1, 2]).is_err());
    }
}
