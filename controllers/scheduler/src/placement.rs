//! Placement decisions, pure: a snapshot of nodes in, a node (or the reasons there is
//! none) out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use shoal_api::{
    Availability, Constraint, DesiredState, Node, NodeState, Protocol, PublishMode, Task,
};

/// What the scheduler knows of one node during a round.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub role: &'static str,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub active: bool,
    pub cpu_total: f64,
    pub memory_total: u64,
    pub cpu_reserved: f64,
    pub memory_reserved: u64,
    pub host_ports: HashSet<(u16, Protocol)>,
    pub tasks: usize,
    pub per_service: HashMap<String, usize>,
}

/// Lower is better: tasks of the same service, then spread groups, then all tasks.
type Score = (usize, Vec<usize>, usize);

pub enum Placement {
    Node(String),
    Nowhere(String),
}

fn service_of(t: &Task) -> String {
    t.metadata
        .labels
        .get("shoal.dev/service")
        .cloned()
        .unwrap_or_default()
}

fn holds_resources(t: &Task) -> bool {
    t.spec.desired_state == DesiredState::Running
        && !t.status.as_ref().is_some_and(|s| s.state.is_terminal())
}

/// Nodes with what their current tasks already use.
pub fn snapshot(nodes: &[Arc<Node>], tasks: &[Arc<Task>]) -> Vec<NodeInfo> {
    let mut infos: Vec<NodeInfo> = nodes
        .iter()
        .map(|n| {
            let status = n.status.clone().unwrap_or_default();
            let res = status.resources.unwrap_or_default();
            NodeInfo {
                name: n.metadata.name.clone(),
                role: match n.spec.role {
                    shoal_api::NodeRole::Manager => "manager",
                    shoal_api::NodeRole::Worker => "worker",
                },
                labels: n.metadata.labels.clone(),
                ready: status.state == NodeState::Ready,
                active: n.spec.availability == Availability::Active,
                cpu_total: res.cpu,
                memory_total: res.memory.0,
                cpu_reserved: 0.0,
                memory_reserved: 0,
                host_ports: HashSet::new(),
                tasks: 0,
                per_service: HashMap::new(),
            }
        })
        .collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let index: HashMap<String, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    for t in tasks.iter().filter(|t| holds_resources(t)) {
        if let Some(i) = t.spec.node.as_ref().and_then(|n| index.get(n)) {
            account(&mut infos[*i], t);
        }
    }
    infos
}

fn account(n: &mut NodeInfo, t: &Task) {
    if let Some(r) = &t.spec.resources.reservations {
        n.cpu_reserved += r.cpu;
        n.memory_reserved += r.memory.0;
    }
    for p in &t.spec.ports {
        if let (PublishMode::Host, Some(published)) = (p.mode, p.published) {
            n.host_ports.insert((published, p.protocol));
        }
    }
    n.tasks += 1;
    *n.per_service.entry(service_of(t)).or_default() += 1;
}

fn attribute<'a>(n: &'a NodeInfo, attr: &str) -> Option<&'a str> {
    match attr {
        "node.name" | "node.hostname" => Some(&n.name),
        "node.role" => Some(n.role),
        a => a
            .strip_prefix("node.labels.")
            .and_then(|k| n.labels.get(k))
            .map(String::as_str),
    }
}

/// Why `n` cannot take `t`, or None when it can.
fn unfit(t: &Task, n: &NodeInfo, constraints: &[Constraint]) -> Option<String> {
    if !n.ready {
        return Some("not ready".into());
    }
    if !n.active {
        return Some("not active (paused or drained)".into());
    }
    for c in constraints {
        let holds = (attribute(n, &c.attribute) == Some(c.value.as_str())) == c.equals;
        if !holds {
            let op = if c.equals { "==" } else { "!=" };
            return Some(format!("constraint {} {op} {}", c.attribute, c.value));
        }
    }
    if let Some(r) = &t.spec.resources.reservations {
        if n.cpu_reserved + r.cpu > n.cpu_total + 1e-9 {
            return Some("not enough CPU".into());
        }
        if n.memory_reserved + r.memory.0 > n.memory_total {
            return Some("not enough memory".into());
        }
    }
    if let Some(l) = &t.spec.resources.limits {
        if l.cpu > n.cpu_total + 1e-9 || l.memory.0 > n.memory_total {
            return Some("limits larger than the node".into());
        }
    }
    for p in &t.spec.ports {
        if let (PublishMode::Host, Some(published)) = (p.mode, p.published) {
            if n.host_ports.contains(&(published, p.protocol)) {
                return Some(format!("host port {published} in use"));
            }
        }
    }
    let max = t.spec.placement.max_replicas_per_node;
    if max > 0 && n.per_service.get(&service_of(t)).copied().unwrap_or(0) >= max as usize {
        return Some(format!("maxReplicasPerNode {max} reached"));
    }
    None
}

/// Picks a node for `t` and accounts for it in `nodes`.
pub fn place(t: &Task, nodes: &mut [NodeInfo]) -> Placement {
    let constraints: Vec<Constraint> = t
        .spec
        .placement
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect();
    let service = service_of(t);
    let spread: Vec<String> = t
        .spec
        .placement
        .preferences
        .iter()
        .map(|p| p.spread.trim().to_string())
        .collect();
    // Tasks of this service per value of each spread attribute.
    let mut groups: Vec<HashMap<Option<String>, usize>> = vec![HashMap::new(); spread.len()];
    if !spread.is_empty() {
        for n in nodes.iter() {
            let count = n.per_service.get(&service).copied().unwrap_or(0);
            for (i, attr) in spread.iter().enumerate() {
                *groups[i]
                    .entry(attribute(n, attr).map(str::to_string))
                    .or_default() += count;
            }
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(usize, Score)> = None;
    for (i, n) in nodes.iter().enumerate() {
        if let Some(why) = unfit(t, n, &constraints) {
            *reasons.entry(why).or_default() += 1;
            continue;
        }
        let spread_score: Vec<usize> = spread
            .iter()
            .enumerate()
            .map(|(g, attr)| {
                groups[g]
                    .get(&attribute(n, attr).map(str::to_string))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        let score = (
            n.per_service.get(&service).copied().unwrap_or(0),
            spread_score,
            n.tasks,
        );
        if best.as_ref().is_none_or(|(_, s)| score < *s) {
            best = Some((i, score));
        }
    }
    match best {
        Some((i, _)) => {
            account(&mut nodes[i], t);
            Placement::Node(nodes[i].name.clone())
        }
        None if nodes.is_empty() => Placement::Nowhere("no nodes are registered".into()),
        None => {
            let parts: Vec<String> = reasons
                .iter()
                .map(|(why, n)| format!("{n} node{}: {why}", if *n == 1 { "" } else { "s" }))
                .collect();
            Placement::Nowhere(parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{NodeResources, NodeSpec, NodeStatus, TaskSpec};

    fn node(name: &str, labels: &[(&str, &str)]) -> Arc<Node> {
        let mut n = Node::new(name, NodeSpec::default());
        n.metadata.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n.status = Some(NodeStatus {
            state: NodeState::Ready,
            resources: Some(NodeResources {
                cpu: 2.0,
                memory: shoal_api::ByteSize(1 << 30),
            }),
            ..Default::default()
        });
        Arc::new(n)
    }

    fn task(service: &str, spec: TaskSpec) -> Task {
        let mut t = Task::new(format!("{service}.1"), spec);
        t.metadata
            .labels
            .insert("shoal.dev/service".into(), service.into());
        t
    }

    fn spec() -> TaskSpec {
        TaskSpec {
            image: "x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn spreads_a_service_then_fills_evenly() {
        let nodes = vec![node("a", &[]), node("b", &[]), node("c", &[])];
        let mut infos = snapshot(&nodes, &[]);
        let mut placed: Vec<String> = Vec::new();
        for _ in 0..6 {
            match place(&task("web", spec()), &mut infos) {
                Placement::Node(n) => placed.push(n),
                Placement::Nowhere(why) => panic!("{why}"),
            }
        }
        placed.sort();
        assert_eq!(placed, ["a", "a", "b", "b", "c", "c"]);
    }

    #[test]
    fn constraints_resources_ports_and_limits() {
        let nodes = vec![node("a", &[("zone", "eu")]), node("b", &[("zone", "us")])];
        let mut infos = snapshot(&nodes, &[]);
        let mut s = spec();
        s.placement.constraints = vec!["node.labels.zone == eu".into()];
        assert!(
            matches!(place(&task("web", s.clone()), &mut infos), Placement::Node(n) if n == "a")
        );
        s.placement.constraints = vec!["node.labels.zone == mars".into()];
        match place(&task("web", s), &mut infos) {
            Placement::Nowhere(why) => assert!(
                why.contains("2 nodes: constraint node.labels.zone == mars"),
                "{why}"
            ),
            Placement::Node(n) => panic!("placed on {n}"),
        }
        let mut big = spec();
        big.resources.reservations = Some(shoal_api::ResourceAmounts {
            cpu: 1.5,
            memory: Default::default(),
        });
        assert!(matches!(
            place(&task("db", big.clone()), &mut infos),
            Placement::Node(_)
        ));
        assert!(matches!(
            place(&task("db", big.clone()), &mut infos),
            Placement::Node(_)
        ));
        assert!(
            matches!(place(&task("db", big), &mut infos), Placement::Nowhere(w) if w.contains("not enough CPU"))
        );
        let mut port = spec();
        port.ports = vec![shoal_api::PortSpec {
            target: 80,
            published: Some(80),
            protocol: Protocol::Tcp,
            mode: PublishMode::Host,
        }];
        assert!(matches!(
            place(&task("lb", port.clone()), &mut infos),
            Placement::Node(_)
        ));
        assert!(matches!(
            place(&task("lb2", port.clone()), &mut infos),
            Placement::Node(_)
        ));
        assert!(
            matches!(place(&task("lb3", port), &mut infos), Placement::Nowhere(w) if w.contains("host port 80"))
        );
    }

    #[test]
    fn spread_preference_balances_racks() {
        let nodes = vec![
            node("a1", &[("rack", "a")]),
            node("a2", &[("rack", "a")]),
            node("b1", &[("rack", "b")]),
        ];
        let mut infos = snapshot(&nodes, &[]);
        let mut s = spec();
        s.placement.preferences = vec![shoal_api::SpreadPreference {
            spread: "node.labels.rack".into(),
        }];
        s.placement.max_replicas_per_node = 2;
        let mut racks = HashMap::new();
        for _ in 0..4 {
            if let Placement::Node(n) = place(&task("web", s.clone()), &mut infos) {
                *racks.entry(n[..1].to_string()).or_insert(0) += 1;
            }
        }
        assert_eq!(racks.get("a"), Some(&2));
        assert_eq!(racks.get("b"), Some(&2));
    }
}
