//! Changes to one object through the API: a JSON merge patch the server applies at the
//! current revision, so a command changing a field has no retry loop of its own.

use serde_json::{Map, Value};
use shoal_api::DynamicObject;
use shoal_wire::pb;

use super::Context;
use crate::output::parse_object;

pub async fn get(ctx: &Context, kind: &str, name: &str) -> anyhow::Result<DynamicObject> {
    let r = ctx
        .client()
        .await?
        .get(pb::GetRequest {
            kind: kind.into(),
            name: name.into(),
        })
        .await?;
    parse_object(&r.into_inner().json)
}

/// Merges `patch` (RFC 7396: `null` removes a field) into the live object; returns the
/// object as written.
pub async fn patch(
    ctx: &Context,
    kind: &str,
    name: &str,
    patch: Value,
) -> anyhow::Result<DynamicObject> {
    let r = ctx
        .client()
        .await?
        .patch(pb::PatchRequest {
            kind: kind.into(),
            name: name.into(),
            merge_patch_json: patch.to_string(),
        })
        .await?;
    parse_object(&r.into_inner().json)
}

/// The merge patch that turns `from` into `to`: changed and new fields as in `to`,
/// fields `to` lacks as `null`. Anything but two objects (arrays too, as RFC 7396
/// says) is replaced whole.
pub fn merge_diff(from: &Value, to: &Value) -> Value {
    let (Value::Object(from), Value::Object(to)) = (from, to) else {
        return to.clone();
    };
    let mut patch = Map::new();
    for (key, old) in from {
        match to.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(new) if new != old => {
                patch.insert(key.clone(), merge_diff(old, new));
            }
            Some(_) => {}
        }
    }
    for (key, new) in to {
        if !from.contains_key(key) {
            patch.insert(key.clone(), new.clone());
        }
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_diff_applied_gives_the_target() {
        let from = json!({"image": "a", "env": {"X": "1", "Y": "2"}, "args": ["x"], "gone": 1,
                          "obj": {"k": 1}});
        let to = json!({"image": "b", "env": {"X": "1", "Z": "3"}, "args": ["y", "z"],
                        "obj": 5, "new": {"n": true}});
        let patch = merge_diff(&from, &to);
        assert_eq!(
            patch,
            json!({"image": "b", "env": {"Y": null, "Z": "3"}, "args": ["y", "z"], "gone": null,
                   "obj": 5, "new": {"n": true}})
        );
        let mut doc = from;
        json_patch::merge(&mut doc, &patch);
        assert_eq!(doc, to);
        assert_eq!(merge_diff(&to, &to), json!({}));
    }
}
