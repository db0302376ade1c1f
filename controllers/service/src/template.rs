//! The task template of a service: what every task of one spec revision shares, its
//! hash (tasks carry it as a label, so outdated tasks are easy to find), and new tasks.

use shoal_api::{
    DesiredState, NetworkRef, OwnerReference, Service, ServiceMode, ServiceSpec, Task, TaskSpec,
    INGRESS_NETWORK,
};

pub use shoal_api::labels::{ATTEMPT, HISTORY, MODE, RUN, SERVICE, SLOT, TEMPLATE};

/// FNV-1a of the container fields: stable across builds and servers.
pub fn template_hash(spec: &ServiceSpec) -> String {
    let mut parts = serde_json::json!({
        "image": spec.container.image,
        "command": spec.container.command,
        "env": spec.container.env,
        "ports": spec.container.ports,
        "resources": spec.container.resources,
        "placement": spec.placement,
    });
    // Fields added later count only when set, so that services from before them keep
    // their hash (and are not rolled for nothing).
    if let Some(map) = parts.as_object_mut() {
        let later = [
            ("healthcheck", serde_json::json!(spec.container.healthcheck)),
            ("entrypoint", serde_json::json!(spec.container.entrypoint)),
            ("workdir", serde_json::json!(spec.container.workdir)),
            ("user", serde_json::json!(spec.container.user)),
            ("mounts", serde_json::json!(spec.container.mounts)),
            ("networks", serde_json::json!(spec.container.networks)),
            ("links", serde_json::json!(spec.container.links)),
            ("secrets", serde_json::json!(spec.container.secrets)),
            ("configs", serde_json::json!(spec.container.configs)),
        ];
        for (key, value) in later {
            if !value.is_null() && value != serde_json::json!([]) {
                map.insert(key.into(), value);
            }
        }
        if !spec.container.logging.is_empty() {
            map.insert("logging".into(), serde_json::json!(spec.container.logging));
        }
    }
    let text = parts.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

pub fn mode_name(mode: ServiceMode) -> &'static str {
    match mode {
        ServiceMode::Replicated => "replicated",
        ServiceMode::Global => "global",
        ServiceMode::Job => "job",
        ServiceMode::Cron => "cron",
    }
}

/// A new task for `slot` of `svc`, from its current spec.
pub fn new_task(
    svc: &Service,
    name: &str,
    slot: &str,
    attempt: u32,
    node: Option<String>,
    run: Option<&str>,
) -> Task {
    let spec = &svc.spec;
    let mut container = spec.container.clone();
    // Swarm's way: a task reached through the routing mesh joins `ingress`, where
    // every node forwards the published port to it.
    if container.publishes_through_mesh()
        && !container
            .networks
            .iter()
            .any(|n| n.name() == INGRESS_NETWORK)
    {
        container
            .networks
            .push(NetworkRef::Name(INGRESS_NETWORK.into()));
    }
    let mut t = Task::new(
        name,
        TaskSpec {
            container,
            node,
            desired_state: DesiredState::Running,
            placement: spec.placement.clone(),
            restart: None,
        },
    );
    let labels = &mut t.metadata.labels;
    labels.insert(SERVICE.into(), svc.metadata.name.clone());
    labels.insert(SLOT.into(), slot.into());
    labels.insert(TEMPLATE.into(), template_hash(spec));
    labels.insert(ATTEMPT.into(), attempt.to_string());
    labels.insert(MODE.into(), mode_name(spec.mode).into());
    if let Some(run) = run {
        labels.insert(RUN.into(), run.into());
    }
    t.metadata.owner_references = vec![OwnerReference {
        kind: "Service".into(),
        name: svc.metadata.name.clone(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: true,
    }];
    t
}

pub fn label<'a>(t: &'a Task, key: &str) -> Option<&'a str> {
    t.metadata.labels.get(key).map(String::as_str)
}

pub fn attempt_of(t: &Task) -> u32 {
    label(t, ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(1)
}

pub fn is_history(t: &Task) -> bool {
    label(t, HISTORY) == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ServiceSpec {
        serde_json::from_str(json).expect("spec")
    }

    #[test]
    fn what_a_container_is_given_rolls_it_and_an_unset_field_changes_nothing() {
        let plain = template_hash(&spec(r#"{"image": "a"}"#));
        assert_eq!(
            plain,
            template_hash(&spec(r#"{"image": "a", "secrets": []}"#))
        );
        let mut seen = vec![plain];
        for changed in [
            r#"{"image": "a", "secrets": [{"name": "s1"}]}"#,
            r#"{"image": "a", "secrets": [{"name": "s2", "target": "s1"}]}"#,
            r#"{"image": "a", "configs": [{"name": "c"}]}"#,
            r#"{"image": "a", "networks": ["front"]}"#,
            r#"{"image": "a", "networks": ["front"], "links": ["web.1"]}"#,
        ] {
            let hash = template_hash(&spec(changed));
            assert!(!seen.contains(&hash), "{changed} has a hash of its own");
            seen.push(hash);
        }
    }
}
