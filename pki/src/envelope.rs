//! Envelope encryption of Secrets and Configs. Each value is sealed under a data key of
//! its own; the data key is sealed under the keyring's current value key and kept
//! beside the value; the keyring is sealed under the cluster key, which is not in the
//! store. Rotating the value key re-seals each small data key and never the values, so
//! it is cheap enough to do whenever an operator likes, and an old value key can be
//! dropped once nothing is sealed under it.
//!
//! Layouts (big-endian): a keyring is `current: u32, count: u16, (id: u32, key: 32
//! bytes) * count`; a sealed value is `1, key id: u32, length: u16, sealed data key,
//! sealed value`.

use std::collections::{BTreeMap, BTreeSet};

use crate::{PkiError, SealKey};

const VERSION: u8 = 1;
/// The label the keyring is sealed under the cluster key with.
const KEYRING_LABEL: &str = "value-keys";

/// The value keys: every one something may still be sealed under, and the one new
/// seals use.
pub struct Keyring {
    current: u32,
    keys: BTreeMap<u32, SealKey>,
}

fn bad(why: impl Into<String>) -> PkiError {
    PkiError::Seal(why.into())
}

/// Splits `n` bytes off the front of `bytes`.
fn take<'b>(bytes: &mut &'b [u8], n: usize, what: &str) -> Result<&'b [u8], PkiError> {
    if bytes.len() < n {
        return Err(bad(format!("{what}: cut short")));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8], what: &str) -> Result<u32, PkiError> {
    let b = take(bytes, 4, what)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_u16(bytes: &mut &[u8], what: &str) -> Result<u16, PkiError> {
    let b = take(bytes, 2, what)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// The label a value's data key is sealed with: the value's own, so a data key cannot
/// be moved to another value either.
fn data_key_label(label: &str) -> String {
    format!("{label}#data-key")
}

/// A sealed value taken apart.
struct Sealed<'b> {
    key_id: u32,
    data_key: &'b [u8],
    value: &'b [u8],
}

impl<'b> Sealed<'b> {
    fn parse(mut bytes: &'b [u8]) -> Result<Sealed<'b>, PkiError> {
        let version = take(&mut bytes, 1, "sealed value")?[0];
        if version != VERSION {
            return Err(bad(format!("sealed value: unknown version {version}")));
        }
        let key_id = take_u32(&mut bytes, "sealed value")?;
        let len = take_u16(&mut bytes, "sealed value")?;
        let data_key = take(&mut bytes, usize::from(len), "sealed value's data key")?;
        Ok(Sealed {
            key_id,
            data_key,
            value: bytes,
        })
    }

    fn write(key_id: u32, data_key: &[u8], value: &[u8]) -> Result<Vec<u8>, PkiError> {
        let len = u16::try_from(data_key.len()).map_err(|_| bad("data key too long"))?;
        let mut out = Vec::with_capacity(7 + data_key.len() + value.len());
        out.push(VERSION);
        out.extend_from_slice(&key_id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data_key);
        out.extend_from_slice(value);
        Ok(out)
    }
}

/// The value key a sealed value's data key is sealed under.
pub fn sealed_under(sealed: &[u8]) -> Result<u32, PkiError> {
    Sealed::parse(sealed).map(|s| s.key_id)
}

impl Keyring {
    /// A keyring of one new key.
    pub fn generate() -> Result<Keyring, PkiError> {
        Ok(Keyring {
            current: 1,
            keys: BTreeMap::from([(1, SealKey::generate()?)]),
        })
    }

    /// The id of the key new seals use.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The ids of every key in the ring.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    fn key(&self, id: u32) -> Result<&SealKey, PkiError> {
        self.keys.get(&id).ok_or_else(|| {
            bad(format!(
                "sealed under value key {id}, which the keyring no longer has"
            ))
        })
    }

    /// This ring with a new key that new seals (and rewraps) use; the old keys stay
    /// until [`retain`](Self::retain) finds nothing sealed under them.
    pub fn rotated(&self) -> Result<Keyring, PkiError> {
        let next = self
            .keys
            .keys()
            .next_back()
            .map_or(1, |last| last.saturating_add(1));
        let mut keys: BTreeMap<u32, SealKey> = self
            .keys
            .iter()
            .map(|(id, k)| (*id, SealKey::from_bytes(k.bytes())))
            .map(|(id, k)| k.map(|k| (id, k)))
            .collect::<Result<_, _>>()?;
        keys.insert(next, SealKey::generate()?);
        Ok(Keyring {
            current: next,
            keys,
        })
    }

    /// Drops every key that is not current and not in `in_use`; says whether any went.
    pub fn retain(&mut self, in_use: &BTreeSet<u32>) -> bool {
        let before = self.keys.len();
        let current = self.current;
        self.keys
            .retain(|id, _| *id == current || in_use.contains(id));
        self.keys.len() != before
    }

    /// The ring sealed under the cluster key, as the store keeps it.
    pub fn seal(&self, cluster: &SealKey) -> Result<Vec<u8>, PkiError> {
        let count = u16::try_from(self.keys.len()).map_err(|_| bad("too many value keys"))?;
        let mut plain = Vec::with_capacity(6 + self.keys.len() * 36);
        plain.extend_from_slice(&self.current.to_be_bytes());
        plain.extend_from_slice(&count.to_be_bytes());
        for (id, key) in &self.keys {
            plain.extend_from_slice(&id.to_be_bytes());
            plain.extend_from_slice(key.bytes());
        }
        cluster.seal(KEYRING_LABEL, &plain)
    }

    /// Opens a ring the store kept.
    pub fn open(cluster: &SealKey, sealed: &[u8]) -> Result<Keyring, PkiError> {
        let plain = cluster.open(KEYRING_LABEL, sealed)?;
        let mut bytes = plain.as_slice();
        let current = take_u32(&mut bytes, "keyring")?;
        let count = take_u16(&mut bytes, "keyring")?;
        let mut keys = BTreeMap::new();
        for _ in 0..count {
            let id = take_u32(&mut bytes, "keyring")?;
            keys.insert(id, SealKey::from_bytes(take(&mut bytes, 32, "keyring")?)?);
        }
        if !bytes.is_empty() || !keys.contains_key(&current) {
            return Err(bad("keyring: malformed"));
        }
        Ok(Keyring { current, keys })
    }

    /// Seals `value` under a new data key of its own, sealed under the current key.
    /// `label` names the value (`secret/db-pass`): it opens only as that.
    pub fn seal_value(&self, label: &str, value: &[u8]) -> Result<Vec<u8>, PkiError> {
        let data_key = SealKey::generate()?;
        let sealed_value = data_key.seal(label, value)?;
        let sealed_key = self
            .key(self.current)?
            .seal(&data_key_label(label), data_key.bytes())?;
        Sealed::write(self.current, &sealed_key, &sealed_value)
    }

    /// Opens what [`seal_value`](Self::seal_value) sealed as `label`.
    pub fn open_value(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, PkiError> {
        let parts = Sealed::parse(sealed)?;
        let data_key = self
            .key(parts.key_id)?
            .open(&data_key_label(label), parts.data_key)?;
        SealKey::from_bytes(&data_key)?.open(label, parts.value)
    }

    /// The same value with its data key sealed again under the current key (None:
    /// it already is). The value's own bytes are carried over untouched.
    pub fn rewrap(&self, label: &str, sealed: &[u8]) -> Result<Option<Vec<u8>>, PkiError> {
        let parts = Sealed::parse(sealed)?;
        if parts.key_id == self.current {
            return Ok(None);
        }
        let key_label = data_key_label(label);
        let data_key = self.key(parts.key_id)?.open(&key_label, parts.data_key)?;
        let sealed_key = self.key(self.current)?.seal(&key_label, &data_key)?;
        Sealed::write(self.current, &sealed_key, parts.value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_as_itself_and_with_its_ring() {
        let ring = Keyring::generate().expect("ring");
        let sealed = ring.seal_value("secret/a", b"hunter2").expect("seal");
        assert_eq!(
            ring.open_value("secret/a", &sealed).expect("open"),
            b"hunter2"
        );
        assert!(
            ring.open_value("secret/b", &sealed).is_err(),
            "another name"
        );
        assert!(
            ring.open_value("config/a", &sealed).is_err(),
            "another kind"
        );
        let other = Keyring::generate().expect("ring");
        assert!(
            other.open_value("secret/a", &sealed).is_err(),
            "another ring"
        );
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "the value is not in the clear"
        );
    }

    #[test]
    fn rotation_rewraps_data_keys_and_leaves_values_as_they_were() {
        let ring = Keyring::generate().expect("ring");
        let sealed = ring.seal_value("secret/a", b"v").expect("seal");
        let mut rotated = ring.rotated().expect("rotate");
        assert_eq!((rotated.current(), rotated.ids()), (2, vec![1, 2]));
        let rewrapped = rotated
            .rewrap("secret/a", &sealed)
            .expect("rewrap")
            .expect("under the old key");
        assert_eq!(sealed_under(&rewrapped).expect("id"), 2);
        let value_part = |b: &[u8]| Sealed::parse(b).expect("parse").value.to_vec();
        assert_eq!(
            value_part(&rewrapped),
            value_part(&sealed),
            "value untouched"
        );
        assert!(rotated
            .rewrap("secret/a", &rewrapped)
            .expect("again")
            .is_none());
        assert!(rotated.retain(&BTreeSet::new()), "key 1 is unused now");
        assert_eq!(rotated.ids(), vec![2]);
        assert_eq!(
            rotated.open_value("secret/a", &rewrapped).expect("open"),
            b"v"
        );
        assert!(
            rotated.open_value("secret/a", &sealed).is_err(),
            "old key gone"
        );
    }

    #[test]
    fn a_ring_survives_sealing_and_only_opens_with_its_cluster_key() {
        let cluster = SealKey::generate().expect("key");
        let ring = Keyring::generate()
            .expect("ring")
            .rotated()
            .expect("rotate");
        let sealed = ring.seal(&cluster).expect("seal");
        let opened = Keyring::open(&cluster, &sealed).expect("open");
        assert_eq!((opened.current(), opened.ids()), (2, vec![1, 2]));
        let value = ring.seal_value("config/c", b"x").expect("seal");
        assert_eq!(opened.open_value("config/c", &value).expect("open"), b"x");
        let stranger = SealKey::generate().expect("key");
        assert!(Keyring::open(&stranger, &sealed).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let ring = Keyring::generate().expect("ring");
        let good = ring.seal_value("secret/a", b"v").expect("seal");
        for cut in 0..good.len() {
            assert!(
                ring.open_value("secret/a", &good[..cut]).is_err(),
                "cut at {cut}"
            );
            let _ = ring.rewrap("secret/a", &good[..cut]);
            let _ = sealed_under(&good[..cut]);
        }
        let mut flipped = good.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x40;
            assert!(
                ring.open_value("secret/a", &flipped).is_err(),
                "byte {i} altered"
            );
            flipped[i] ^= 0x40;
        }
    }
}
