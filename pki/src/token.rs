//! Join tokens, Swarm's shape: `SHOAL-1-<CA digest>-<secret>`. The digest (SHA-256 of
//! the CA certificate) lets a joining node pin the CA before it trusts anything the
//! server sends; the secret says which role the node joins as. Only the server knows
//! the secrets; rotating one stops new joins with the old token and leaves the nodes
//! that joined alone.

use sha2::{Digest, Sha256};

use crate::{random, PkiError};

const PREFIX: &str = "SHOAL";
const VERSION: &str = "1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the CA certificate (DER), hex.
    pub ca_digest: String,
    pub secret: String,
}

impl JoinToken {
    /// A fresh secret: 16 random bytes, hex.
    pub fn new_secret() -> Result<String, PkiError> {
        Ok(hex::encode(random::<16>()?))
    }

    pub fn parse(text: &str) -> Result<JoinToken, PkiError> {
        let bad = |why: &str| PkiError::Token(why.to_string());
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [prefix, version, digest, secret] = parts[..] else {
            return Err(bad(
                "expected SHOAL-1-<CA digest>-<secret> (from `shoal token create`)",
            ));
        };
        if prefix != PREFIX || version != VERSION {
            return Err(bad(&format!(
                "starts with {prefix}-{version}, expected {PREFIX}-{VERSION}"
            )));
        }
        let hex_of =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(digest, 64) {
            return Err(bad("the CA digest is not 64 hex digits"));
        }
        if !hex_of(secret, 32) {
            return Err(bad("the secret is not 32 hex digits"));
        }
        Ok(JoinToken {
            ca_digest: digest.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }

    /// Whether `secret` is this token's, in time that does not depend on where they
    /// differ.
    pub fn secret_is(&self, secret: &str) -> bool {
        let (a, b) = (
            Sha256::digest(self.secret.as_bytes()),
            Sha256::digest(secret.as_bytes()),
        );
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", self.ca_digest, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_written() {
        let t = JoinToken {
            ca_digest: "ab".repeat(32),
            secret: JoinToken::new_secret().expect("secret"),
        };
        let back = JoinToken::parse(&t.to_string()).expect("parse");
        assert_eq!(back, t);
        assert!(back.secret_is(&t.secret));
        assert!(!back.secret_is(&JoinToken::new_secret().expect("secret")));
    }

    #[test]
    fn a_bad_token_says_what_is_wrong() {
        let digest = "0".repeat(64);
        let secret = "1".repeat(32);
        for (text, says) in [
            ("", "expected SHOAL-1-"),
            ("SWMTKN-1-x-y", "expected SHOAL-1"),
            (&format!("SHOAL-2-{digest}-{secret}"), "expected SHOAL-1"),
            (&format!("SHOAL-1-abc-{secret}"), "CA digest"),
            (&format!("SHOAL-1-{digest}-zz"), "secret"),
            (
                &format!("SHOAL-1-{digest}-{secret}-more"),
                "expected SHOAL-1-",
            ),
        ] {
            let e = JoinToken::parse(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
