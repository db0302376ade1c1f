//! Read-modify-write of one object through the API, retried when someone else wrote
//! in between (the server compares on resourceVersion).

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

/// The object's `spec`, to change in a `modify` closure.
pub fn spec_mut(
    obj: &mut DynamicObject,
) -> anyhow::Result<&mut serde_json::Map<String, serde_json::Value>> {
    let reference = obj.reference().to_lowercase();
    obj.body
        .get_mut("spec")
        .and_then(|s| s.as_object_mut())
        .ok_or_else(|| anyhow::anyhow!("{reference} has a malformed spec"))
}

/// Applies `change` to the live object and writes it back; returns the written object.
pub async fn modify(
    ctx: &Context,
    kind: &str,
    name: &str,
    change: impl Fn(&mut DynamicObject) -> anyhow::Result<()>,
) -> anyhow::Result<DynamicObject> {
    let mut client = ctx.client().await?;
    for _ in 0..10 {
        let mut obj = get(ctx, kind, name).await?;
        change(&mut obj)?;
        obj.body.remove("status");
        match client
            .update(pb::UpdateRequest {
                json: serde_json::to_string(&obj)?,
            })
            .await
        {
            Ok(r) => return parse_object(&r.into_inner().json),
            Err(s) if s.code() == tonic::Code::Aborted => continue,
            Err(s) => return Err(s.into()),
        }
    }
    anyhow::bail!("{kind}/{name} keeps changing; try again")
}
