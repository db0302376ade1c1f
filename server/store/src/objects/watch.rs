//! Object watches for clients (`get -w`): every change with the object's value, a
//! deletion with the last value it had.

use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_api::{DynamicObject, KindDesc};

use super::codec::decode;
use super::keys::kind_prefix;
use super::{ObjectError, ObjectStore, Result};
use crate::{EventType, Revision};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectWatchEvent {
    pub change: ChangeType,
    pub object: DynamicObject,
    pub revision: Revision,
}

pub type ObjectWatchStream = BoxStream<'static, Result<ObjectWatchEvent>>;

impl ObjectStore {
    /// Changes to objects of `kind` from revision `from` (0: from now). A deleted
    /// object carries its last value with the deletion's revision.
    pub async fn watch(&self, kind: &KindDesc, from: Revision) -> Result<ObjectWatchStream> {
        let stream = self.store.watch(&kind_prefix(kind), from).await?;
        Ok(stream
            .map(|item| {
                let ev = item?;
                let revision = ev.revision();
                let (change, kv) = match (ev.event_type, ev.prev) {
                    (EventType::Delete, Some(prev)) => (ChangeType::Deleted, prev),
                    (EventType::Delete, None) => {
                        return Err(ObjectError::Corrupt {
                            key: ev.kv.key,
                            why: "delete event without the previous value".into(),
                        })
                    }
                    (EventType::Put, None) => (ChangeType::Added, ev.kv),
                    (EventType::Put, Some(_)) => (ChangeType::Modified, ev.kv),
                };
                let mut object = decode(&kv)?;
                if change == ChangeType::Deleted {
                    object.metadata.resource_version = Some(revision.to_string());
                }
                Ok(ObjectWatchEvent {
                    change,
                    object,
                    revision,
                })
            })
            .boxed())
    }
}
