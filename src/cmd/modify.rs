//! Read-modify-write of one object through the API, retried when someone else wrote
//! in between (the server compares on resourceVersion).

use shoal_api::DynamicObject;
use shoal_apiserver::pb;

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
