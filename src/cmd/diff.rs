//! `shoal diff`: what apply would change, computed by the server (a dry-run apply) so
//! it can never disagree with apply. Exit codes follow kubectl: 0 same, 1 differs.

use std::process::ExitCode;

use serde_json::Value;
use shoal_api::DynamicObject;
use shoal_wire::pb;

use super::Context;
use crate::output::{parse_object, to_yaml};
use crate::{manifests, Outcome};

#[derive(clap::Args)]
pub struct Args {
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
}

/// The parts of an object that apply can change, as YAML.
fn comparable(obj: Option<&DynamicObject>) -> anyhow::Result<String> {
    let Some(obj) = obj else {
        return Ok(String::new());
    };
    let mut v = serde_json::to_value(obj)?;
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for k in [
                "uid",
                "generation",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
            ] {
                meta.remove(k);
            }
        }
    }
    to_yaml(&v)
}

pub async fn run(ctx: &Context, a: Args) -> Outcome {
    let manifests = manifests::read_all(&a.files)?;
    let mut client = ctx.client().await?;
    // One dry run of them all, as `apply` would send them: checked as a whole, so two
    // documents for one object are refused here too.
    let planned = client
        .apply(manifests::apply_request(&manifests, true)?)
        .await?
        .into_inner();
    if planned.results.len() != manifests.len() {
        anyhow::bail!(
            "the server planned {} of {} objects",
            planned.results.len(),
            manifests.len()
        );
    }
    let mut differs = false;
    for (m, result) in manifests.iter().zip(&planned.results) {
        let kind = m.object.kind.clone();
        let name = m.object.metadata.name.clone();
        let live = match client
            .get(pb::GetRequest {
                kind: kind.clone(),
                name: name.clone(),
            })
            .await
        {
            Ok(r) => Some(parse_object(&r.into_inner().json)?),
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(s.into()),
        };
        let after = parse_object(&result.json)?;
        let (before, after) = (comparable(live.as_ref())?, comparable(Some(&after))?);
        if before == after {
            continue;
        }
        differs = true;
        let label = format!("{}/{name}", kind.to_ascii_lowercase());
        let diff = similar::TextDiff::from_lines(&before, &after);
        print!(
            "{}",
            diff.unified_diff()
                .context_radius(3)
                .header(&format!("live/{label}"), &format!("applied/{label}"))
        );
    }
    Ok(if differs {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
