//! Who may call what. A caller is who its certificate says (read once per connection
//! by the TLS listener into [`Peer`]), never what its request claims: admin
//! certificates call the API; a node's certificate calls the agent API, as that node
//! only and only while its certificate is in force; a call without a certificate gets
//! only what a token or a webhook signature allows (joining, the GitSync hook).

use std::sync::Arc;

use shoal_pki::{Certified, Role};
use shoal_wire::Peer;
use tonic::{Request, Status};

use crate::node_certs::NodeCerts;

#[derive(Clone)]
pub enum Access {
    /// `--insecure`: plaintext on loopback, no identities; whoever reaches the port
    /// is trusted (a development setup).
    Open,
    /// Mutual TLS: identities from certificates.
    Certified(Arc<NodeCerts>),
}

fn caller(extensions: &tonic::Extensions) -> Option<Arc<Certified>> {
    extensions.get::<Peer>().and_then(|p| p.client.clone())
}

fn who(c: &Certified) -> String {
    let role = match c.identity.role {
        Role::Node => "node",
        Role::Server => "server",
        Role::Admin => "admin",
    };
    format!("{role} {:?}", c.identity.name)
}

impl Access {
    /// The admin API: an admin certificate.
    pub fn admin(&self, extensions: &tonic::Extensions) -> Result<(), Status> {
        if matches!(self, Access::Open) {
            return Ok(());
        }
        match caller(extensions) {
            Some(c) if c.identity.role == Role::Admin => Ok(()),
            Some(c) => Err(Status::permission_denied(format!(
                "the certificate of {} may not use the admin API; use an admin config (the server writes <data-dir>/admin.yaml)",
                who(&c)
            ))),
            None => Err(Status::unauthenticated(
                "no client certificate: the API needs an admin certificate (--config, SHOAL_CONFIG or ~/.shoal/config; the server writes <data-dir>/admin.yaml)",
            )),
        }
    }

    /// The agent API, acting for `node`: that node's certificate, still in force. Its
    /// role says whether the node may be a manager.
    pub async fn node<T>(&self, req: &Request<T>, node: &str) -> Result<Option<Role>, Status> {
        let Access::Certified(certs) = self else {
            return Ok(None);
        };
        let Some(c) = caller(req.extensions()) else {
            return Err(Status::unauthenticated(format!(
                "node {node:?}: no client certificate; a node joins first (shoal agent --join URL --token T)"
            )));
        };
        if !matches!(c.identity.role, Role::Node | Role::Server) {
            return Err(Status::permission_denied(format!(
                "the certificate of {} cannot act as a node",
                who(&c)
            )));
        }
        if c.identity.name != node {
            return Err(Status::permission_denied(format!(
                "the certificate of {} cannot act for node {node:?}",
                who(&c)
            )));
        }
        let in_force = certs
            .in_force(node, &c.serial)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if !in_force {
            return Err(Status::permission_denied(format!(
                "node {node:?}: its certificate is revoked (the node was removed); join again with a token"
            )));
        }
        Ok(Some(c.identity.role))
    }
}
