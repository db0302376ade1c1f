//! Who a certificate's holder is: its role in the organisational unit, its name in
//! the common name (Kubernetes puts them in O and CN the same way). The server takes
//! a client's identity from here, never from what a request claims.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;

/// What a certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An agent: the agent API, as itself only.
    Node,
    /// A server: serves the API, calls agents' node API.
    Server,
    /// A user: the API.
    Admin,
}

impl Role {
    pub fn unit(self) -> &'static str {
        match self {
            Role::Node => "shoal-node",
            Role::Server => "shoal-server",
            Role::Admin => "shoal-admin",
        }
    }

    fn of_unit(unit: &str) -> Option<Role> {
        [Role::Node, Role::Server, Role::Admin]
            .into_iter()
            .find(|r| r.unit() == unit)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

/// What the server reads from a client's (already verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    pub identity: Identity,
    /// The serial number, hex: what revocation names.
    pub serial: String,
    /// When it became valid, seconds since the epoch.
    pub not_before: i64,
    /// When it expires, seconds since the epoch.
    pub not_after: i64,
}

impl Certified {
    /// When to renew it (seconds since the epoch): at a random point between 50% and
    /// 80% of its life, as Swarm does, so a cluster's nodes do not all renew at once.
    pub fn renewal_at(&self) -> Result<i64, PkiError> {
        let fraction = f64::from(u32::from_le_bytes(crate::random::<4>()?)) / f64::from(u32::MAX);
        Ok(renewal_point(self.not_before, self.not_after, fraction))
    }

    /// The same, from a PEM certificate.
    pub fn from_pem(pem: &str) -> Result<Certified, PkiError> {
        Self::from_der(&crate::der_of(pem)?)
    }

    /// Reads a certificate's identity; one without a role this CA gives is refused.
    pub fn from_der(der: &[u8]) -> Result<Certified, PkiError> {
        let bad = |why: &str| PkiError::Certificate(why.to_string());
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(&e.to_string()))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .ok_or_else(|| bad("no common name"))?;
        let role = subject
            .iter_organizational_unit()
            .filter_map(|u| u.as_str().ok())
            .find_map(Role::of_unit)
            .ok_or_else(|| bad("no shoal role in its organisational unit"))?;
        Ok(Certified {
            identity: Identity {
                role,
                name: name.to_string(),
            },
            serial: hex::encode(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// The point `fraction` (0 to 1) of the way from 50% to 80% of a life from
/// `not_before` to `not_after`.
fn renewal_point(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * (0.5 + 0.3 * fraction.clamp(0.0, 1.0))) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_life() {
        assert_eq!(renewal_point(1000, 2000, 0.0), 1500);
        assert_eq!(renewal_point(1000, 2000, 1.0), 1800);
        assert_eq!(renewal_point(1000, 2000, 0.5), 1650);
        assert_eq!(renewal_point(1000, 2000, 7.0), 1800);
    }
}
