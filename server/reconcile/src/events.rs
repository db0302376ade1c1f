//! Events for users: what a controller did or saw, attached to an object.
//!
//! Repeats of the same (object, type, reason, message, source) update one Event's
//! `count` and `lastTimestamp` instead of piling up. Events expire: each write attaches
//! the Event to a store lease granted for `ttl`, rotated every `ttl/10`, so an Event
//! lives about `ttl` after it last happened (Kubernetes keeps events for an hour the
//! same way).

use std::time::Duration;

use chrono::Utc;
use shoal_api::{ApiVersion, Event, EventType, ObjectMeta, ObjectReference, Resource};
use shoal_store::objects::ObjectError;
use shoal_store::{LeaseId, ObjectStore};
use tokio::sync::Mutex;
use tokio::time::Instant;

pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

pub struct EventRecorder {
    objects: ObjectStore,
    source: String,
    ttl: Duration,
    lease: Mutex<Option<(LeaseId, Instant)>>,
}

impl EventRecorder {
    pub fn new(objects: ObjectStore, source: impl Into<String>) -> Self {
        Self::with_ttl(objects, source, DEFAULT_EVENT_TTL)
    }

    pub fn with_ttl(objects: ObjectStore, source: impl Into<String>, ttl: Duration) -> Self {
        EventRecorder {
            objects,
            source: source.into(),
            ttl,
            lease: Mutex::new(None),
        }
    }

    pub async fn normal(&self, obj: &impl Resource, reason: &str, message: &str) {
        self.record(reference(obj), EventType::Normal, reason, message)
            .await
    }

    pub async fn warning(&self, obj: &impl Resource, reason: &str, message: &str) {
        self.record(reference(obj), EventType::Warning, reason, message)
            .await
    }

    /// Records an event. Failing to record never fails the caller's work: it is logged.
    pub async fn record(
        &self,
        involved: ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        tracing::info!(object = %format!("{}/{}", involved.kind, involved.name), %type_, reason, message, "event");
        for _ in 0..5 {
            match self.try_record(&involved, type_, reason, message).await {
                Ok(()) => return,
                Err(ObjectError::Conflict { .. } | ObjectError::AlreadyExists { .. }) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, reason, "could not record event");
                    return;
                }
            }
        }
    }

    async fn current_lease(&self) -> Result<LeaseId, ObjectError> {
        let mut lease = self.lease.lock().await;
        if let Some((id, granted)) = *lease {
            if granted.elapsed() < self.ttl / 10 {
                return Ok(id);
            }
        }
        let id = self.objects.raw().grant_lease(self.ttl).await?;
        *lease = Some((id, Instant::now()));
        Ok(id)
    }

    async fn try_record(
        &self,
        involved: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ObjectError> {
        let name = event_name(involved, type_, reason, message, &self.source);
        let lease = self.current_lease().await?;
        let now = Utc::now();
        match self.objects.get_typed::<Event>(&name).await? {
            Some(mut ev) => {
                ev.count += 1;
                ev.last_timestamp = now;
                let obj = shoal_api::DynamicObject::from_typed(&ev)
                    .map_err(|e| ObjectError::Invalid(e.to_string()))?;
                self.objects.update(obj, Some(lease)).await.map(|_| ())
            }
            None => {
                let ev = Event {
                    api_version: ApiVersion::V1,
                    kind: "Event".into(),
                    metadata: ObjectMeta::named(name),
                    type_,
                    reason: reason.into(),
                    message: message.into(),
                    involved_object: involved.clone(),
                    count: 1,
                    first_timestamp: now,
                    last_timestamp: now,
                    source: self.source.clone(),
                };
                let obj = shoal_api::DynamicObject::from_typed(&ev)
                    .map_err(|e| ObjectError::Invalid(e.to_string()))?;
                self.objects.create(obj, Some(lease)).await.map(|_| ())
            }
        }
    }
}

pub fn reference<R: Resource>(obj: &R) -> ObjectReference {
    ObjectReference {
        kind: R::KIND.to_string(),
        name: obj.name().to_string(),
        uid: obj.metadata().uid.clone(),
    }
}

/// `<kind>.<name>.<hash>`: one Event per distinct occurrence on one object. The hash
/// is FNV-1a, stable across builds, so every server names the same event the same way.
fn event_name(
    involved: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
    source: &str,
) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let uid = involved.uid.as_deref().unwrap_or_default();
    for part in [
        involved.kind.as_str(),
        &involved.name,
        uid,
        &type_.to_string(),
        reason,
        message,
        source,
    ] {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!(
        "{}.{}.{h:016x}",
        involved.kind.to_ascii_lowercase(),
        involved.name
    )
}
