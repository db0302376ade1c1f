//! A network's subnet and VXLAN id: claimed once and kept while the network lives;
//! released with its addresses when it is deleted and nothing uses it any more.

use std::collections::BTreeSet;

use shoal_api::{ConditionStatus, Network, Resource};
use shoal_reconcile::Action;
use shoal_store::objects::{Claim, ClaimOwner, ClaimWrite, ObjectError};

use crate::ipam::{next_vni, Subnet};
use crate::plan::address_prefix;
use crate::{users, Config, Context, NetworkError, FINALIZER};

const SUBNETS: &str = "subnets/";
const VNIS: &str = "vnis/";

/// What a network holds once its subnet is settled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    pub subnet: Subnet,
    pub vni: u32,
}

fn subnet_of(claim: &Claim) -> Option<Subnet> {
    let name = claim.path.strip_prefix(SUBNETS)?;
    let (addr, len) = name.rsplit_once('-')?;
    Subnet::parse(&format!("{addr}/{len}")).ok()
}

fn vni_of(claim: &Claim) -> Option<u32> {
    claim.path.strip_prefix(VNIS)?.parse().ok()
}

/// The network's subnet and VXLAN id, claiming them first if it has none; `None` when
/// no subnet can be had (said in the Network's status and one Warning Event).
pub(crate) async fn ensure(
    net: &Network,
    owner: &ClaimOwner,
    ctx: &Context,
) -> Result<Option<Held>, NetworkError> {
    let subnets = ctx.objects.claims(SUBNETS).await?;
    let vnis = ctx.objects.claims(VNIS).await?;
    let mine = |c: &&Claim| c.owner.uid == owner.uid;
    let mut write = ClaimWrite::default();
    let subnet = match subnets.iter().find(mine).and_then(subnet_of) {
        Some(held) => held,
        None => match choose_subnet(net, &subnets, ctx) {
            Ok(chosen) => {
                write
                    .claim
                    .push((format!("{SUBNETS}{}", chosen.claim_name()), owner.clone()));
                chosen
            }
            Err(why) => {
                crate::addresses::set_ready(net, ctx, ConditionStatus::False, "NoSubnet", &why)
                    .await?;
                ctx.events.warning(net, "NoSubnet", &why).await;
                return Ok(None);
            }
        },
    };
    if let Some(wanted) = net.spec.subnet.as_deref() {
        if Subnet::parse(wanted).ok() != Some(subnet) {
            let why = format!(
                "spec.subnet is {wanted} but the network has {subnet}: a network's subnet cannot change; delete the network and create it again"
            );
            crate::addresses::set_ready(net, ctx, ConditionStatus::False, "SubnetChanged", &why)
                .await?;
            return Ok(None);
        }
    }
    let vni = match vnis.iter().find(mine).and_then(vni_of) {
        Some(held) => held,
        None => {
            let used: BTreeSet<u32> = vnis.iter().filter_map(vni_of).collect();
            let Some(vni) = next_vni(&used) else {
                let why = "every VXLAN id is in use".to_string();
                crate::addresses::set_ready(net, ctx, ConditionStatus::False, "NoVni", &why)
                    .await?;
                return Ok(None);
            };
            write.claim.push((format!("{VNIS}{vni}"), owner.clone()));
            vni
        }
    };
    if !write.is_empty() {
        ctx.objects.write_claims(write).await?;
        tracing::info!(network = net.name(), %subnet, vni, "network allocated");
    }
    Ok(Some(Held { subnet, vni }))
}

/// The manifest's subnet if no other network overlaps it, else the lowest free one of
/// the default pool.
fn choose_subnet(net: &Network, claims: &[Claim], ctx: &Context) -> Result<Subnet, String> {
    let taken: Vec<(Subnet, &str)> = claims
        .iter()
        .filter_map(|c| subnet_of(c).map(|s| (s, c.owner.name.as_str())))
        .collect();
    match net.spec.subnet.as_deref() {
        Some(text) => {
            let wanted = Subnet::parse(text).map_err(|e| format!("spec.subnet: {e}"))?;
            match taken.iter().find(|(s, _)| s.overlaps(&wanted)) {
                Some((s, other)) => Err(format!("subnet {wanted} overlaps {s} of network {other}")),
                None => Ok(wanted),
            }
        }
        None => {
            let Config { pool, subnet_size } = ctx.config;
            let subnets: Vec<Subnet> = taken.iter().map(|(s, _)| *s).collect();
            pool.carve(subnet_size, &subnets).ok_or_else(|| {
                format!(
                    "the default address pool {pool} has no free /{subnet_size} left ({} networks hold subnets)",
                    subnets.len()
                )
            })
        }
    }
}

/// A deleted network goes once nothing uses it: its claims are released, then its
/// finalizer, which lets the store remove it.
pub(crate) async fn finish_deletion(
    net: &Network,
    uid: &str,
    ctx: &Context,
) -> Result<Action, NetworkError> {
    if !net.metadata.finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::AwaitChange);
    }
    let (services, tasks) = users(ctx, net.name());
    if !services.is_empty() || !tasks.is_empty() {
        let mut names: Vec<String> = services
            .iter()
            .map(|s| format!("service/{}", s.name()))
            .collect();
        names.extend(tasks.iter().map(|t| format!("task/{}", t.name())));
        let total = names.len();
        names.truncate(5);
        let why = format!(
            "deleting: still used by {total} ({}{})",
            names.join(", "),
            if total > 5 { ", ..." } else { "" }
        );
        crate::addresses::set_ready(net, ctx, ConditionStatus::False, "InUse", &why).await?;
        return Ok(Action::AwaitChange);
    }
    let mut release = ctx.objects.claims(&address_prefix(uid)).await?;
    for prefix in [SUBNETS, VNIS] {
        let claims = ctx.objects.claims(prefix).await?;
        release.extend(claims.into_iter().filter(|c| c.owner.uid == uid));
    }
    for chunk in release.chunks(90) {
        ctx.objects
            .write_claims(ClaimWrite {
                claim: Vec::new(),
                release: chunk.to_vec(),
            })
            .await?;
    }
    let expected = net.metadata.uid.clone();
    let released = ctx
        .objects
        .modify::<Network>(net.name(), |n| {
            if n.metadata.uid != expected {
                return Ok(false);
            }
            let before = n.metadata.finalizers.len();
            n.metadata.finalizers.retain(|f| f != FINALIZER);
            Ok(n.metadata.finalizers.len() != before)
        })
        .await;
    match released {
        Ok(_) | Err(ObjectError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    ctx.cursors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(uid);
    ctx.events
        .normal(
            net,
            "Released",
            "its subnet, VXLAN id and addresses are released",
        )
        .await;
    Ok(Action::AwaitChange)
}
