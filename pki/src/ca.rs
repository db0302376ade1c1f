//! The cluster CA: made once (ECDSA P-256), it signs each role's certificates. A
//! node's certificate is signed from its CSR, so its key never leaves the node, and
//! its subject is the identity the server decided, whatever the CSR asked for.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::identity::{Identity, Role};
use crate::{der_of, random, PkiError};

/// The CA outlives every certificate it signs by far (Swarm's lives 20 years).
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Clocks across a cluster differ a little: a new certificate is valid from before now.
const BACKDATE: Duration = Duration::from_secs(300);

pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

/// A certificate and, when the CA made the key, its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Option<String>,
}

/// A random 16-byte serial, positive and with no leading zero byte, so its DER
/// encoding is always those 16 bytes (RFC 5280 wants it positive, at most 20 bytes).
fn serial() -> Result<SerialNumber, PkiError> {
    let mut b = random::<16>()?;
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

fn cert_err(e: rcgen::Error) -> PkiError {
    PkiError::Certificate(e.to_string())
}

impl Ca {
    /// A new CA for the cluster `cluster` (its name goes in the subject).
    pub fn create(cluster: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("shoal cluster CA {cluster}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        // Checked here, so a broken pair fails at start rather than at the first join.
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(cert_err)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der: der_of(cert_pem)?,
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// SHA-256 of the certificate, hex: what a join token pins.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(&self.cert_der))
    }

    fn leaf(
        identity: &Identity,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::new(sans.to_vec()).map_err(cert_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.name.clone());
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, identity.role.unit());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match identity.role {
            // Both serve (the node API, the API) and call (each other).
            Role::Node | Role::Server => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        params.serial_number = Some(serial()?);
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    /// Signs the public key of `csr_pem` (whose signature is checked) as `identity`,
    /// valid for `sans` (DNS names or addresses) for `lifetime`.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_err)?;
        let cert = Self::leaf(identity, sans, lifetime)?
            .signed_by(&csr.public_key, &issuer)
            .map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: None,
        })
    }

    /// A key and a certificate for it, both made here (the server's own, an admin's).
    pub fn issue(
        &self,
        identity: &Identity,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_err)?;
        let cert = Self::leaf(identity, sans, lifetime)?
            .signed_by(&key, &issuer)
            .map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
        })
    }
}

/// SHA-256 of a PEM certificate (its DER), hex: what a join token pins.
pub fn cert_digest(pem: &str) -> Result<String, PkiError> {
    Ok(hex::encode(Sha256::digest(der_of(pem)?)))
}

/// A new key (PEM) and a CSR for it (PEM) naming `name`: what a joining node sends.
pub fn new_key_and_csr(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .map_err(|e| PkiError::Csr(e.to_string()))?;
    let pem = csr.pem().map_err(|e| PkiError::Csr(e.to_string()))?;
    Ok((key.serialize_pem(), pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Certified;

    fn node(name: &str) -> Identity {
        Identity {
            role: Role::Node,
            name: name.into(),
        }
    }

    #[test]
    fn a_node_certificate_carries_the_identity_the_ca_gave_not_the_csrs() {
        let ca = Ca::create("test").expect("ca");
        let (_key, csr) = new_key_and_csr("admin").expect("csr");
        let issued = ca
            .sign_csr(
                &csr,
                &node("n1"),
                &["10.0.0.1".into()],
                Duration::from_secs(3600),
            )
            .expect("signed");
        assert!(
            issued.key_pem.is_none(),
            "the node's key stays with the node"
        );
        let der = der_of(&issued.cert_pem).expect("der");
        let c = Certified::from_der(&der).expect("identity");
        assert_eq!(c.identity, node("n1"));
        assert_eq!(c.serial.len(), 32);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            (c.not_after - now - 3600).abs() < 60,
            "{}",
            c.not_after - now
        );
    }

    #[test]
    fn a_ca_reads_back_from_its_pem_with_the_same_digest() {
        let ca = Ca::create("test").expect("ca");
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).expect("load");
        assert_eq!(again.digest(), ca.digest());
        assert_eq!(cert_digest(ca.cert_pem()).expect("digest"), ca.digest());
        assert_ne!(Ca::create("test").expect("ca").digest(), ca.digest());
    }

    #[test]
    fn a_bad_csr_is_refused_with_a_reason() {
        let ca = Ca::create("test").expect("ca");
        let e = ca
            .sign_csr("not a csr", &node("n1"), &[], Duration::from_secs(60))
            .err()
            .expect("refused");
        assert!(
            e.to_string().starts_with("certificate signing request"),
            "{e}"
        );
    }

    #[test]
    fn issued_keys_come_with_their_certificate() {
        let ca = Ca::create("test").expect("ca");
        let admin = Identity {
            role: Role::Admin,
            name: "admin".into(),
        };
        let issued = ca
            .issue(&admin, &[], Duration::from_secs(60))
            .expect("issued");
        assert!(issued.key_pem.is_some());
        let der = der_of(&issued.cert_pem).expect("der");
        assert_eq!(Certified::from_der(&der).expect("identity").identity, admin);
    }
}
