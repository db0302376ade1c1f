//! `shoal network ls` and `shoal network inspect NAME`: what `docker network ls` and
//! `docker network inspect` show a Swarm user — the subnet, gateway and VXLAN id the
//! network controller allocated, each service's virtual IP and each task's address.

use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;
use shoal_api::{Network, Service, Task};
use shoal_wire::pb;

use super::{list_objects, Context};
use crate::output::{self, parse_object, print_rows};
use crate::{Format, Outcome};

#[derive(clap::Subcommand)]
pub enum Command {
    /// List networks with their subnet, gateway, VXLAN id and addresses in use.
    #[command(alias = "list")]
    Ls,
    /// Show a network's allocation: services' virtual IPs and tasks' addresses.
    Inspect { name: String },
}

pub async fn run(ctx: &Context, c: Command) -> Outcome {
    match c {
        Command::Ls => {
            let items = list_objects(ctx, "Network", "").await?;
            output::print_list("Network", &items, ctx.format)?;
        }
        Command::Inspect { name } => inspect(ctx, &name).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A network as `inspect` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspected {
    name: String,
    driver: String,
    subnet: Option<String>,
    gateway: Option<String>,
    vni: Option<u32>,
    addresses_in_use: u32,
    addresses_total: u32,
    conditions: Vec<shoal_api::Condition>,
    services: Vec<ServiceEntry>,
    tasks: Vec<TaskEntry>,
    /// On `ingress`: each node's own address, through which the mesh forwards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<shoal_api::NodeAddress>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceEntry {
    name: String,
    endpoint_mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    vip: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskEntry {
    name: String,
    address: String,
    node: String,
    state: String,
}

fn mode_name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

async fn inspect(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let got = ctx
        .client()
        .await?
        .get(pb::GetRequest {
            kind: "Network".into(),
            name: name.into(),
        })
        .await?
        .into_inner();
    let net: Network = parse_object(&got.json)?.to_typed()?;
    let status = net.status.clone().unwrap_or_default();
    // A service is on a network it names, and on `ingress` when it publishes through
    // the routing mesh (its tasks join it).
    let on = |c: &shoal_api::ContainerSpec| {
        c.networks.iter().any(|n| n.name() == name)
            || (name == shoal_api::INGRESS_NETWORK && c.publishes_through_mesh())
    };
    let mut services = Vec::new();
    for obj in list_objects(ctx, "Service", "").await? {
        let svc: Service = obj.to_typed()?;
        if !on(&svc.spec.container) {
            continue;
        }
        let vip = status
            .services
            .iter()
            .find(|v| v.name == svc.metadata.name)
            .map(|v| v.vip.clone());
        services.push(ServiceEntry {
            name: svc.metadata.name.clone(),
            endpoint_mode: mode_name(&svc.spec.endpoint_mode),
            vip,
        });
    }
    let mut tasks = Vec::new();
    for obj in list_objects(ctx, "Task", "").await? {
        let task: Task = obj.to_typed()?;
        let Some(st) = task.status.as_ref() else {
            continue;
        };
        let Some(attachment) = st.attachments.iter().find(|a| a.network == name) else {
            continue;
        };
        if st.state.is_terminal() {
            continue;
        }
        tasks.push(TaskEntry {
            name: task.metadata.name.clone(),
            address: attachment.address.clone(),
            node: task.spec.node.clone().unwrap_or_default(),
            state: st.state.as_str().into(),
        });
    }
    let shown = Inspected {
        name: net.metadata.name.clone(),
        driver: mode_name(&net.spec.driver),
        subnet: status.subnet.clone().or(net.spec.subnet.clone()),
        gateway: status.gateway.clone(),
        vni: status.vni,
        addresses_in_use: status.addresses_in_use,
        addresses_total: status.addresses_total,
        conditions: status.conditions.clone(),
        services,
        tasks,
        nodes: status.nodes.clone(),
    };
    match ctx.format {
        Some(Format::Json) => println!("{}", serde_json::to_string_pretty(&shown)?),
        Some(Format::Yaml) => print!("{}", output::to_yaml(&shown)?),
        _ => print_inspected(&shown),
    }
    Ok(())
}

fn print_inspected(n: &Inspected) {
    let none = || "<none>".to_string();
    println!("Name:      {}", n.name);
    println!("Driver:    {}", n.driver);
    println!("Subnet:    {}", n.subnet.clone().unwrap_or_else(none));
    println!("Gateway:   {}", n.gateway.clone().unwrap_or_else(none));
    println!("VNI:       {}", n.vni.map_or_else(none, |v| v.to_string()));
    println!(
        "In use:    {} of {} addresses",
        n.addresses_in_use, n.addresses_total
    );
    for c in &n.conditions {
        let message = if c.message.is_empty() {
            String::new()
        } else {
            format!(": {}", c.message)
        };
        println!("{}:     {:?} ({}){message}", c.type_, c.status, c.reason);
    }
    println!("Services:");
    if n.services.is_empty() {
        println!("  <none>");
    } else {
        let mut rows = vec![vec!["  NAME".into(), "ENDPOINT MODE".into(), "VIP".into()]];
        for s in &n.services {
            rows.push(vec![
                format!("  {}", s.name),
                s.endpoint_mode.clone(),
                s.vip.clone().unwrap_or_else(none),
            ]);
        }
        print_rows(&rows);
    }
    println!("Tasks:");
    if n.tasks.is_empty() {
        println!("  <none>");
    } else {
        let mut rows = vec![vec![
            "  NAME".into(),
            "ADDRESS".into(),
            "NODE".into(),
            "STATE".into(),
        ]];
        for t in &n.tasks {
            rows.push(vec![
                format!("  {}", t.name),
                t.address.clone(),
                t.node.clone(),
                t.state.clone(),
            ]);
        }
        print_rows(&rows);
    }
    if !n.nodes.is_empty() {
        println!("Nodes:");
        let mut rows = vec![vec!["  NAME".into(), "ADDRESS".into()]];
        for node in &n.nodes {
            rows.push(vec![format!("  {}", node.name), node.address.clone()]);
        }
        print_rows(&rows);
    }
}
