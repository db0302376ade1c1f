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

#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Node(String),
    Nowhere(String),
}

fn service_of(t: &Task) -> &str {
    t.metadata
        .labels
        .get(shoal_api::labels::SERVICE)
        .map(String::as_str)
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
    if let Some(r) = &t.spec.container.resources.reservations {
        n.cpu_reserved += r.cpu;
        n.memory_reserved += r.memory.0;
    }
    for p in &t.spec.container.ports {
        if let (PublishMode::Host, Some(published)) = (p.mode, p.published) {
            n.host_ports.insert((published, p.protocol));
        }
    }
    n.tasks += 1;
    let service = service_of(t);
    match n.per_service.get_mut(service) {
        Some(count) => *count += 1,
        None => {
            n.per_service.insert(service.to_string(), 1);
        }
    }
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
    if let Some(r) = &t.spec.container.resources.reservations {
        if n.cpu_reserved + r.cpu > n.cpu_total + 1e-9 {
            return Some("not enough CPU".into());
        }
        if n.memory_reserved + r.memory.0 > n.memory_total {
            return Some("not enough memory".into());
        }
    }
    if let Some(l) = &t.spec.container.resources.limits {
        if l.cpu > n.cpu_total + 1e-9 || l.memory.0 > n.memory_total {
            return Some("limits larger than the node".into());
        }
    }
    for p in &t.spec.container.ports {
        if let (PublishMode::Host, Some(published)) = (p.mode, p.published) {
            if n.host_ports.contains(&(published, p.protocol)) {
                return Some(format!("host port {published} in use"));
            }
        }
    }
    let max = t.spec.placement.max_replicas_per_node;
    if max > 0 && n.per_service.get(service_of(t)).copied().unwrap_or(0) >= max as usize {
        return Some(format!("maxReplicasPerNode {max} reached"));
    }
    None
}

fn constraints_of(t: &Task) -> Vec<Constraint> {
    t.spec
        .placement
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect()
}

/// Whether two tasks are placed alike: same service, placement, resources and ports.
fn alike(a: &Task, b: &Task) -> bool {
    service_of(a) == service_of(b)
        && a.spec.placement == b.spec.placement
        && a.spec.container.resources == b.spec.container.resources
        && a.spec.container.ports == b.spec.container.ports
}

/// Places `tasks` in order, accounting for each in `nodes`; the same answers as
/// calling [`place`] for each, faster.
///
/// A run of alike tasks without spread preferences (the common case: the replicas of
/// one service) shares one heap of the nodes ordered by score. A task's own placement
/// only raises its node's score, and can only make that node unfit for the rest of the
/// run (reservations, host ports, maxReplicasPerNode), so each task costs O(log nodes)
/// instead of a pass over every node.
pub fn place_all(tasks: &[&Task], nodes: &mut [NodeInfo]) -> Vec<Placement> {
    let mut out = Vec::with_capacity(tasks.len());
    let mut start = 0;
    while start < tasks.len() {
        let first = tasks[start];
        let end = tasks[start..]
            .iter()
            .position(|t| !alike(first, t))
            .map_or(tasks.len(), |n| start + n);
        if first.spec.placement.preferences.is_empty() && end - start > 1 {
            place_run(&tasks[start..end], nodes, &mut out);
        } else {
            out.extend(tasks[start..end].iter().map(|t| place(t, nodes)));
        }
        start = end;
    }
    out
}

fn place_run(run: &[&Task], nodes: &mut [NodeInfo], out: &mut Vec<Placement>) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let first = run[0];
    let constraints = constraints_of(first);
    let service = service_of(first);
    let key = |i: usize, n: &NodeInfo| {
        let same = n.per_service.get(service).copied().unwrap_or(0);
        Reverse((same, n.tasks, i))
    };
    let mut heap: BinaryHeap<Reverse<(usize, usize, usize)>> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| unfit(first, n, &constraints).is_none())
        .map(|(i, n)| key(i, n))
        .collect();
    for (done, t) in run.iter().enumerate() {
        let mut chosen = None;
        while let Some(Reverse((_, _, i))) = heap.pop() {
            if unfit(t, &nodes[i], &constraints).is_none() {
                chosen = Some(i);
                break;
            }
        }
        let Some(i) = chosen else {
            // Nothing fits any more; say why once and give the rest the same answer.
            let why = place(t, nodes);
            out.extend(std::iter::repeat_n(why, run.len() - done));
            return;
        };
        account(&mut nodes[i], t);
        out.push(Placement::Node(nodes[i].name.clone()));
        heap.push(key(i, &nodes[i]));
    }
}

/// Picks a node for `t` and accounts for it in `nodes`.
pub fn place(t: &Task, nodes: &mut [NodeInfo]) -> Placement {
    let constraints = constraints_of(t);
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
            let count = n.per_service.get(service).copied().unwrap_or(0);
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
            n.per_service.get(service).copied().unwrap_or(0),
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
            .insert(shoal_api::labels::SERVICE.into(), service.into());
        t
    }

    fn spec() -> TaskSpec {
        TaskSpec {
            container: shoal_api::ContainerSpec {
                image: "x".into(),
                ..Default::default()
            },
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
        big.container.resources.reservations = Some(shoal_api::ResourceAmounts {
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
        port.container.ports = vec![shoal_api::PortSpec {
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
    fn only_tasks_no_placement_can_crowd_out_are_placed_on_creation() {
        use crate::freely_placeable;
        assert!(freely_placeable(&task("web", spec())));
        let mut reserved = spec();
        reserved.container.resources.reservations = Some(shoal_api::ResourceAmounts {
            cpu: 0.5,
            memory: Default::default(),
        });
        assert!(!freely_placeable(&task("db", reserved)));
        let mut capped = spec();
        capped.placement.max_replicas_per_node = 1;
        assert!(!freely_placeable(&task("one-each", capped)));
        let mut host = spec();
        host.container.ports = vec![shoal_api::PortSpec {
            target: 80,
            published: Some(80),
            protocol: Protocol::Tcp,
            mode: PublishMode::Host,
        }];
        assert!(!freely_placeable(&task("lb", host.clone())));
        host.container.ports[0].mode = PublishMode::Ingress;
        assert!(
            freely_placeable(&task("lb", host)),
            "ingress ports are shared"
        );
        let mut bound = task("web", spec());
        bound.spec.node = Some("a".into());
        assert!(!freely_placeable(&bound), "already placed");
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
    /// The heap path must answer exactly as one scan per task would: a mix of services,
    /// constraints, reservations, host ports and per-node limits, both ways.
    #[test]
    fn placing_runs_together_matches_placing_one_by_one() {
        let nodes: Vec<Arc<Node>> = (0..12)
            .map(|i| {
                node(
                    &format!("n{i:02}"),
                    &[("zone", if i % 3 == 0 { "a" } else { "b" })],
                )
            })
            .collect();
        let mut tasks = Vec::new();
        for (service, count) in [
            ("web", 30),
            ("db", 9),
            ("lb", 14),
            ("pinned", 7),
            ("web", 5),
        ] {
            let mut s = spec();
            match service {
                "db" => {
                    s.container.resources.reservations = Some(shoal_api::ResourceAmounts {
                        cpu: 0.7,
                        memory: Default::default(),
                    })
                }
                "lb" => {
                    s.container.ports = vec![shoal_api::PortSpec {
                        target: 80,
                        published: Some(8080),
                        protocol: Protocol::Tcp,
                        mode: PublishMode::Host,
                    }]
                }
                "pinned" => {
                    s.placement.constraints = vec!["node.labels.zone == a".into()];
                    s.placement.max_replicas_per_node = 1;
                }
                _ => {}
            }
            for _ in 0..count {
                tasks.push(task(service, s.clone()));
            }
        }
        let mut one_by_one = snapshot(&nodes, &[]);
        let expected: Vec<Placement> = tasks.iter().map(|t| place(t, &mut one_by_one)).collect();
        let mut together = snapshot(&nodes, &[]);
        let refs: Vec<&Task> = tasks.iter().collect();
        assert_eq!(place_all(&refs, &mut together), expected);
        assert!(expected.iter().any(|p| matches!(p, Placement::Nowhere(_))));
    }
}
