//! Events for users: what a controller did or saw, attached to an object.
//!
//! Repeats of the same (object, type, reason, message, source) update one Event's
//! `count` and `lastTimestamp` instead of piling up. Events expire: each write attaches
//! the Event to a store lease granted for `ttl`, rotated every `ttl/10`, so an Event
//! lives about `ttl` after it last happened (Kubernetes keeps events for an hour the
//! same way).
//!
//! Similar events (one object, type, reason and source, with different messages) are
//! combined as client-go's correlator does: past [`AGGREGATE_AFTER`] distinct messages
//! within [`AGGREGATE_WINDOW`], the rest go to one Event whose message reads
//! `(combined from similar events): <the latest>` and whose `count` grows.

use std::time::Duration;

use chrono::Utc;
use shoal_api::{ApiVersion, Event, EventType, ObjectMeta, ObjectReference, Resource};
use shoal_store::objects::ObjectError;
use shoal_store::{LeaseId, ObjectStore};
use tokio::sync::Mutex;
use tokio::time::Instant;

pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);
/// client-go's figures: more than 10 similar events in 10 minutes are combined.
pub const AGGREGATE_AFTER: usize = 10;
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
const COMBINED: &str = "(combined from similar events): ";
/// The recorder forgets the oldest windows past this many objects.
const SIMILAR_TRACKED: usize = 10_000;

mod similar;
use similar::Similar;

pub struct EventRecorder {
    objects: ObjectStore,
    source: String,
    ttl: Duration,
    lease: Mutex<Option<(LeaseId, Instant)>>,
    similar: std::sync::Mutex<Similar>,
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
            similar: std::sync::Mutex::new(Similar::new(SIMILAR_TRACKED, AGGREGATE_WINDOW)),
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
        let combined = self.is_one_too_many(&involved, type_, reason, message);
        if let Err(e) = self
            .try_record(&involved, type_, reason, message, combined)
            .await
        {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }

    /// Whether this event is past the similar ones an object may have on its own.
    fn is_one_too_many(
        &self,
        involved: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> bool {
        let key = format!(
            "{}/{}/{}/{type_}/{reason}",
            involved.kind,
            involved.name,
            involved.uid.as_deref().unwrap_or_default()
        );
        let mut similar = self.similar.lock().unwrap_or_else(|p| p.into_inner());
        similar.note(&key, fnv1a([message]), Instant::now()) > AGGREGATE_AFTER
    }

    async fn current_lease(&self) -> Result<LeaseId, ObjectError> {
        let mut lease = self.lease.lock().await;
        if let Some((id, granted)) = *lease {
            if granted.elapsed() < self.ttl / 10 {
                return Ok(id);
            }
        }
        let id = self.objects.grant_lease(self.ttl).await?;
        *lease = Some((id, Instant::now()));
        Ok(id)
    }

    async fn try_record(
        &self,
        involved: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
        combined: bool,
    ) -> Result<(), ObjectError> {
        // A combined event is named without its message, so every later one lands on it.
        let named_by = if combined { COMBINED } else { message };
        let name = event_name(involved, type_, reason, named_by, &self.source);
        let message = if combined {
            format!("{COMBINED}{message}")
        } else {
            message.to_string()
        };
        let lease = self.current_lease().await?;
        let now = Utc::now();
        let create = || Event {
            api_version: ApiVersion::V1,
            kind: "Event".into(),
            metadata: ObjectMeta::named(name.clone()),
            type_,
            reason: reason.into(),
            message: message.clone(),
            involved_object: involved.clone(),
            count: 1,
            first_timestamp: now,
            last_timestamp: now,
            source: self.source.clone(),
        };
        let bump = |ev: &mut Event| {
            ev.count += 1;
            ev.last_timestamp = now;
            ev.message = message.clone();
        };
        self.objects
            .upsert(&name, Some(lease), create, bump)
            .await
            .map(|_| ())
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
/// FNV-1a over the parts, each ended by a byte no UTF-8 text has.
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn event_name(
    involved: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
    source: &str,
) -> String {
    let uid = involved.uid.as_deref().unwrap_or_default();
    let h = fnv1a([
        involved.kind.as_str(),
        &involved.name,
        uid,
        &type_.to_string(),
        reason,
        message,
        source,
    ]);
    format!(
        "{}.{}.{h:016x}",
        involved.kind.to_ascii_lowercase(),
        involved.name
    )
}
