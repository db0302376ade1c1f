//! The GitSync webhook receiver, served on the API's own port at
//! `POST /hooks/gitsync/<name>`, like Flux's notification receiver: a git host calls it
//! on push and the GitSync syncs at once instead of at its next interval.
//!
//! The body must be signed the way GitHub, Gitea and Forgejo sign theirs: header
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` keyed with the server's
//! `--webhook-secret-file`. Without that file the endpoint refuses everything. A good
//! call only sets the GitSync's `shoal.dev/sync-requested` annotation; the controller
//! (on whichever server leads) does the rest.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hmac::{Hmac, Mac};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use sha2::Sha256;
use shoal_api::{GitSync, SYNC_REQUEST_ANNOTATION};
use shoal_store::objects::ObjectError;
use shoal_store::ObjectStore;
use tonic::body::Body;
use tonic::server::NamedService;

/// Push payloads with many commits can be large; anything bigger is not a push.
const MAX_BODY: usize = 8 << 20;
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The `/hooks/...` routes. Cheap to clone (tonic clones it per request).
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    objects: ObjectStore,
    secret: Option<Vec<u8>>,
}

impl NamedService for Webhooks {
    const NAME: &'static str = "hooks";
}

impl Webhooks {
    /// `secret`: the HMAC key; `None` turns the endpoint off.
    pub fn new(objects: ObjectStore, secret: Option<Vec<u8>>) -> Self {
        Webhooks {
            inner: Arc::new(Inner { objects, secret }),
        }
    }
}

impl tower_service::Service<Request<Body>> for Webhooks {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (status, text) = inner.handle(req).await;
            tracing::info!(status = status.as_u16(), %text, "webhook");
            let mut resp = Response::new(format!("{text}\n"));
            *resp.status_mut() = status;
            Ok(resp)
        })
    }
}

/// Whether `signature` (`sha256=<hex>`) is `body`'s HMAC under `secret`, compared in
/// constant time.
pub fn signature_matches(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

impl Inner {
    async fn handle(&self, req: Request<Body>) -> (StatusCode, String) {
        let Some(name) = req.uri().path().strip_prefix("/hooks/gitsync/") else {
            return (
                StatusCode::NOT_FOUND,
                "no such hook; use /hooks/gitsync/NAME".into(),
            );
        };
        let name = name.trim_end_matches('/').to_string();
        if req.method() != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
        }
        let Some(secret) = &self.secret else {
            return (
                StatusCode::NOT_FOUND,
                "webhooks are off: start the server with --webhook-secret-file".into(),
            );
        };
        let signature = req
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return (StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        };
        let Some(signature) = signature else {
            return (
                StatusCode::UNAUTHORIZED,
                "missing X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>".into(),
            );
        };
        if !signature_matches(secret, &body, &signature) {
            return (
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature-256 does not match the body".into(),
            );
        }
        match self.request_sync(&name).await {
            Ok(()) => (
                StatusCode::ACCEPTED,
                format!("gitsync/{name}: sync requested"),
            ),
            Err(ObjectError::NotFound { .. }) => {
                (StatusCode::NOT_FOUND, format!("gitsync/{name} not found"))
            }
            Err(ObjectError::Invalid(m)) => (StatusCode::CONFLICT, m),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    async fn request_sync(&self, name: &str) -> Result<(), ObjectError> {
        self.objects
            .modify::<GitSync>(name, |gs| {
                if gs.spec.suspend {
                    return Err(ObjectError::Invalid(format!(
                        "gitsync/{name} is suspended; resume it first"
                    )));
                }
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                gs.metadata
                    .annotations
                    .insert(SYNC_REQUEST_ANNOTATION.to_string(), now);
                Ok(true)
            })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_key_over_the_same_body_matches() {
        // From GitHub's documentation of webhook signatures.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_matches(secret, body, good));
        assert!(!signature_matches(b"another secret", body, good));
        assert!(!signature_matches(secret, b"Hello, World?", good));
        assert!(!signature_matches(
            secret,
            body,
            &good.replace("sha256=", "sha1=")
        ));
        assert!(!signature_matches(secret, body, "sha256=zz"));
        assert!(!signature_matches(secret, body, ""));
    }
}
