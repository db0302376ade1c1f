//! Where one MessagePack value ends in a stream of bytes, found without decoding it.
//!
//! A forward connection sends values back to back, and a read may end anywhere in
//! one. Decoding on the chance that a value is complete would allocate what a
//! hostile length prefix asks for and recurse as deep as the sender nests; this
//! scanner walks the bytes once, allocates nothing but a small stack, refuses
//! nesting deeper than [`MAX_DEPTH`] and values longer than the caller's limit, and
//! says how long the first value is once all of it has arrived. Only then is it
//! decoded, from a slice that holds every byte its lengths promise.

use thiserror::Error;

/// Containers inside containers, at most: Fluentd's messages nest four deep
/// (message, entries, entry, record) plus what a record holds.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("byte {at}: 0xc1 is not MessagePack")]
    Invalid { at: usize },
    #[error("values nest deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("a value longer than {limit} bytes")]
    TooLong { limit: usize },
}

/// The length of the first complete value in `buf`; None while more bytes are
/// needed. A value longer than `limit` is an error as soon as that is known.
pub fn value_len(buf: &[u8], limit: usize) -> Result<Option<usize>, FrameError> {
    // Values still to read at each open level; the outermost is the one value.
    let mut pending: Vec<u64> = vec![1];
    let mut at = 0usize;
    while let Some(left) = pending.last_mut() {
        if *left == 0 {
            pending.pop();
            continue;
        }
        *left -= 1;
        let Some(&marker) = buf.get(at) else {
            return Ok(None);
        };
        let (head, body, items) =
            shape(marker, &buf[at + 1..]).ok_or(FrameError::Invalid { at })?;
        let Some(head) = head else {
            return Ok(None);
        };
        let end = (at as u64)
            .saturating_add(1)
            .saturating_add(head as u64)
            .saturating_add(body);
        if end > limit as u64 {
            return Err(FrameError::TooLong { limit });
        }
        at = end as usize;
        if items > 0 {
            if pending.len() > MAX_DEPTH {
                return Err(FrameError::TooDeep);
            }
            pending.push(items);
        }
    }
    if at > buf.len() {
        return Ok(None);
    }
    Ok(Some(at))
}

/// For a marker byte and what follows it: the length of its header after the
/// marker (None: not all arrived), of its payload, and how many values it contains.
/// None: not a marker.
fn shape(marker: u8, rest: &[u8]) -> Option<(Option<usize>, u64, u64)> {
    // A length of `n` bytes, big-endian, right after the marker; `extra` header bytes
    // follow it (an ext's type byte).
    let len = |n: usize| -> Option<u64> {
        rest.get(..n)
            .map(|b| b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    };
    let sized = |n: usize, extra: usize| (len(n).map(|_| n + extra), len(n).unwrap_or(0));
    let fixed = |n: u64| (Some(0), n, 0);
    Some(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => fixed(0),
        0x80..=0x8f => (Some(0), 0, 2 * u64::from(marker & 0x0f)),
        0x90..=0x9f => (Some(0), 0, u64::from(marker & 0x0f)),
        0xa0..=0xbf => fixed(u64::from(marker & 0x1f)),
        0xc1 => return None,
        0xc4 | 0xd9 => with(sized(1, 0)),
        0xc5 | 0xda => with(sized(2, 0)),
        0xc6 | 0xdb => with(sized(4, 0)),
        // ext: length, then the type byte, then the data
        0xc7 => with(sized(1, 1)),
        0xc8 => with(sized(2, 1)),
        0xc9 => with(sized(4, 1)),
        0xca => fixed(4),
        0xcb => fixed(8),
        0xcc | 0xd0 => fixed(1),
        0xcd | 0xd1 => fixed(2),
        0xce | 0xd2 => fixed(4),
        0xcf | 0xd3 => fixed(8),
        0xd4 => fixed(2),
        0xd5 => fixed(3),
        0xd6 => fixed(5),
        0xd7 => fixed(9),
        0xd8 => fixed(17),
        0xdc => container(len(2), 2, 1),
        0xdd => container(len(4), 4, 1),
        0xde => container(len(2), 2, 2),
        0xdf => container(len(4), 4, 2),
    })
}

fn with((head, body): (Option<usize>, u64)) -> (Option<usize>, u64, u64) {
    (head, body, 0)
}

fn container(n: Option<u64>, head: usize, per_item: u64) -> (Option<usize>, u64, u64) {
    match n {
        Some(n) => (Some(head), 0, n * per_item),
        None => (None, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode");
        out
    }

    #[test]
    fn a_value_is_complete_only_with_all_its_bytes() {
        let v = Value::Array(vec![
            Value::from("app.web"),
            Value::Ext(0, vec![0, 0, 0, 1, 0, 0, 0, 2]),
            Value::Map(vec![(Value::from("log"), Value::from("x".repeat(300)))]),
            Value::Binary(vec![7; 70_000]),
            Value::from(u64::MAX),
            Value::F64(1.5),
        ]);
        let bytes = encode(&v);
        for cut in 0..bytes.len() {
            assert_eq!(
                value_len(&bytes[..cut], usize::MAX),
                Ok(None),
                "cut at {cut}"
            );
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(value_len(&two, usize::MAX), Ok(Some(bytes.len())));
    }

    #[test]
    fn hostile_lengths_and_nesting_are_refused_without_allocating() {
        // A bin32 promising 4 GiB, with 3 bytes of it.
        let huge = [0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert_eq!(
            value_len(&huge, 1 << 20),
            Err(FrameError::TooLong { limit: 1 << 20 })
        );
        assert_eq!(value_len(&huge, usize::MAX), Ok(None));
        // An array32 of 4 billion nils, with a few: waits, counts nothing up front.
        let many = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0];
        assert_eq!(value_len(&many, usize::MAX), Ok(None));
        let deep = vec![0x91u8; 1000];
        assert_eq!(value_len(&deep, usize::MAX), Err(FrameError::TooDeep));
        assert_eq!(
            value_len(&[0x91, 0xc1], 100),
            Err(FrameError::Invalid { at: 1 })
        );
    }
}
