//! Sealing: AES-256-GCM (ring's), a fresh random nonce per seal, and a label bound
//! in as associated data so a sealed value cannot be moved to another place and
//! opened there. Layout: version 1, nonce, ciphertext and tag.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::{random, PkiError};

const VERSION: u8 = 1;

/// An AES-256 key: the cluster key (outside the store, sealing the CA, the tokens and
/// the value keys), a value key (sealing data keys) or a data key (one value's).
pub struct SealKey([u8; 32]);

impl SealKey {
    pub fn generate() -> Result<SealKey, PkiError> {
        Ok(SealKey(random()?))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey, PkiError> {
        <[u8; 32]>::try_from(bytes)
            .map(SealKey)
            .map_err(|_| PkiError::Seal(format!("a cluster key is 32 bytes, not {}", bytes.len())))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> Result<LessSafeKey, PkiError> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| PkiError::Seal("unusable key".into()))
    }

    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, PkiError> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let mut body = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(label.as_bytes()),
                &mut body,
            )
            .map_err(|_| PkiError::Seal("sealing failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// A digest of `data` only holders of this key can compute: HMAC-SHA256 under a
    /// key derived from this one. The same value gives the same digest, but a copy of
    /// the store cannot be searched for a guessed password as a plain hash could.
    pub fn keyed_digest(&self, data: &[u8]) -> String {
        use ring::hmac;
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0),
            b"shoal value digest",
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        format!("hmac-sha256:{}", hex::encode(hmac::sign(&key, data)))
    }

    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, PkiError> {
        let bad = |why: &str| PkiError::Seal(format!("{label}: {why}"));
        let (&version, rest) = sealed.split_first().ok_or_else(|| bad("empty"))?;
        if version != VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        if rest.len() < NONCE_LEN {
            return Err(bad("too short"));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("bad nonce"))?;
        let mut body = body.to_vec();
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut body)
            .map_err(|_| {
                bad("does not open with this cluster key (another cluster's, or altered)")
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_sealed_opens_only_with_its_key_and_label() {
        let key = SealKey::generate().expect("key");
        let sealed = key.seal("ca", b"private").expect("seal");
        assert_eq!(key.open("ca", &sealed).expect("open"), b"private");
        assert!(key.open("tokens", &sealed).is_err(), "another label");
        let other = SealKey::generate().expect("key");
        assert!(other.open("ca", &sealed).is_err(), "another key");
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(key.open("ca", &altered).is_err(), "altered");
        assert_ne!(
            key.seal("ca", b"private").expect("seal"),
            sealed,
            "fresh nonce"
        );
    }

    #[test]
    fn keyed_digests_are_stable_per_key_and_not_a_plain_hash() {
        let key = SealKey::generate().expect("key");
        let d = key.keyed_digest(b"hunter2");
        assert_eq!(d, key.keyed_digest(b"hunter2"));
        assert_ne!(d, key.keyed_digest(b"hunter3"));
        assert_ne!(
            d,
            SealKey::generate().expect("key").keyed_digest(b"hunter2")
        );
        use sha2::Digest;
        let plain = hex::encode(sha2::Sha256::digest(b"hunter2"));
        assert!(d.starts_with("hmac-sha256:") && !d.contains(&plain), "{d}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let key = SealKey::generate().expect("key");
        for junk in [&b""[..], &[1], &[1, 2, 3], &[9; 40], &[1; 12]] {
            assert!(key.open("x", junk).is_err(), "{junk:?}");
        }
        assert!(SealKey::from_bytes(&[0; 31]).is_err());
    }
}
