//! The cluster's PKI: a CA that signs certificates by role (`ca.rs`), who a
//! certificate says its holder is (`identity.rs`), the tokens a node joins with
//! (`token.rs`), keys sealed under the cluster key so the store never holds a
//! private key in the clear (`seal.rs`), and the envelope Secrets and Configs are
//! sealed in (`envelope.rs`). No I/O: callers keep the bytes.

mod ca;
mod envelope;
mod identity;
mod seal;
mod token;

pub use ca::{cert_digest, new_key_and_csr, Ca, Issued};
pub use envelope::{sealed_under, Keyring};
pub use identity::{Certified, Identity, Role};
pub use seal::SealKey;
pub use token::JoinToken;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("certificate signing request: {0}")]
    Csr(String),
    #[error("join token: {0}")]
    Token(String),
    #[error("sealed data: {0}")]
    Seal(String),
    #[error("the system's random source failed")]
    Random,
}

/// `n` bytes from the system's random source.
fn random<const N: usize>() -> Result<[u8; N], PkiError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PkiError::Random)?;
    Ok(b)
}

/// A PEM certificate's DER.
fn der_of(pem: &str) -> Result<Vec<u8>, PkiError> {
    use x509_parser::pem::parse_x509_pem;
    let (_, pem) =
        parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Certificate(e.to_string()))?;
    Ok(pem.contents)
}
