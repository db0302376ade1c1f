//! The planner on its own: no store, no clock but the one given.

use std::sync::Arc;

use chrono::{Duration as Chrono, Utc};
use shoal_api::labels;
use shoal_api::{
    DesiredState, Node, OwnerReference, RestartCondition, Service, ServiceSpec, Task, TaskState,
    TaskStatus,
};
use shoal_controller_service::{plan_service, template_hash, View};

fn service(replicas: u32) -> Service {
    let mut s = Service::new(
        "web",
        ServiceSpec {
            container: shoal_api::ContainerSpec {
                image: "img:1".into(),
                ..Default::default()
            },
            replicas: Some(replicas),
            ..Default::default()
        },
    );
    s.metadata.uid = Some("svc-uid".into());
    s.metadata.generation = Some(1);
    s
}

fn task(svc: &Service, slot: u32, state: TaskState, ago_secs: i64) -> Arc<Task> {
    let mut t = Task::new(format!("web.{slot}"), Default::default());
    t.spec.container.image = svc.spec.container.image.clone();
    t.spec.node = Some("n1".into());
    let labels = &mut t.metadata.labels;
    labels.insert(labels::SERVICE.into(), "web".into());
    labels.insert(labels::SLOT.into(), slot.to_string());
    labels.insert(labels::TEMPLATE.into(), template_hash(&svc.spec));
    labels.insert(labels::ATTEMPT.into(), "1".into());
    t.metadata.uid = Some(format!("t{slot}"));
    t.metadata.owner_references = vec![OwnerReference {
        kind: "Service".into(),
        name: "web".into(),
        uid: "svc-uid".into(),
        controller: true,
    }];
    t.status = Some(TaskStatus {
        state,
        last_transition_time: Some(Utc::now() - Chrono::seconds(ago_secs)),
        started_at: Some(Utc::now() - Chrono::seconds(ago_secs)),
        ..Default::default()
    });
    Arc::new(t)
}

fn plan(svc: &Service, tasks: &[Arc<Task>]) -> shoal_controller_service::Plan {
    let nodes: Vec<Arc<Node>> = Vec::new();
    plan_service(&View {
        svc,
        tasks,
        nodes: &nodes,
        now: Utc::now(),
    })
}

#[test]
fn a_new_service_gets_one_task_per_slot() {
    let svc = service(3);
    let p = plan(&svc, &[]);
    let names: Vec<&str> = p.creates.iter().map(|t| t.metadata.name.as_str()).collect();
    assert_eq!(names, ["web.1", "web.2", "web.3"]);
    let t = &p.creates[0];
    assert_eq!(t.metadata.labels[labels::SERVICE], "web");
    assert_eq!(t.metadata.owner_references[0].uid, "svc-uid");
    assert_eq!(p.status.replicas, 3);
    assert_eq!(p.status.observed_generation, Some(1));
}

#[test]
fn a_failed_task_is_replaced_after_the_restart_delay() {
    let mut svc = service(1);
    svc.spec.restart.delay = shoal_api::Duration::from_secs(5);
    let recent = plan(&svc, &[task(&svc, 1, TaskState::Failed, 1)]);
    assert!(recent.creates.is_empty() && recent.archives.is_empty());
    assert!(
        recent.requeue.is_some_and(|d| d.as_secs() <= 4),
        "{:?}",
        recent.requeue
    );
    let later = plan(&svc, &[task(&svc, 1, TaskState::Failed, 6)]);
    assert_eq!(later.archives.len(), 1);
    assert_eq!(later.creates[0].metadata.labels[labels::ATTEMPT], "2");
    assert!(later
        .events
        .iter()
        .any(|e| e.reason == "TaskFailed" && e.warning));
}

/// A failed task whose status lacks `lastTransitionTime` is replaced at once, not
/// waited on forever (it wedged a service at 0/1 when a client could write status).
#[test]
fn a_failed_task_without_a_transition_time_is_replaced() {
    let mut svc = service(1);
    svc.spec.restart.delay = shoal_api::Duration::from_secs(5);
    let mut failed = (*task(&svc, 1, TaskState::Failed, 1)).clone();
    if let Some(status) = failed.status.as_mut() {
        status.last_transition_time = None;
    }
    let p = plan(&svc, &[Arc::new(failed)]);
    assert_eq!(p.archives.len(), 1, "{:?}", p.requeue);
    assert_eq!(p.creates.len(), 1);
}

#[test]
fn restart_condition_none_and_max_attempts_stop_replacements() {
    let mut svc = service(1);
    svc.spec.restart.condition = Some(RestartCondition::None);
    assert!(plan(&svc, &[task(&svc, 1, TaskState::Failed, 60)])
        .creates
        .is_empty());

    svc.spec.restart.condition = Some(RestartCondition::OnFailure);
    svc.spec.restart.max_attempts = 1;
    let mut old = (*task(&svc, 1, TaskState::Failed, 120)).clone();
    old.metadata.name = "web.1.1".into();
    old.metadata
        .labels
        .insert(labels::HISTORY.into(), "true".into());
    let mut current = (*task(&svc, 1, TaskState::Failed, 60)).clone();
    current
        .metadata
        .labels
        .insert(labels::ATTEMPT.into(), "2".into());
    let p = plan(&svc, &[Arc::new(old), Arc::new(current)]);
    assert!(
        p.creates.is_empty(),
        "the second failure exceeds maxAttempts 1"
    );
}

#[test]
fn orphaned_tasks_are_replaced_at_once_and_scale_down_stops_extra_slots() {
    let svc = service(1);
    let p = plan(
        &svc,
        &[
            task(&svc, 1, TaskState::Orphaned, 0),
            task(&svc, 2, TaskState::Running, 30),
        ],
    );
    assert_eq!(p.archives.len(), 1, "orphaned web.1 moves to history");
    assert_eq!(p.creates.len(), 1);
    assert_eq!(p.shutdowns.len(), 1);
    assert_eq!(p.shutdowns[0].metadata.name, "web.2");
}

#[test]
fn a_spec_change_starts_a_rolling_update_one_batch_at_a_time() {
    let old = service(3);
    let tasks: Vec<Arc<Task>> = (1..=3)
        .map(|i| task(&old, i, TaskState::Running, 60))
        .collect();
    let mut svc = old.clone();
    svc.spec.container.image = "img:2".into();
    svc.metadata.generation = Some(2);
    let mut status = plan(&old, &tasks).status;
    status.observed_generation = Some(1);
    svc.status = Some(status);
    let p = plan(&svc, &tasks);
    assert!(p.events.iter().any(|e| e.reason == "UpdateStarted"));
    assert_eq!(
        p.shutdowns.len(),
        1,
        "parallelism 1, stop-first: one old task stops"
    );
    assert!(p.creates.is_empty());
    assert!(tasks
        .iter()
        .all(|t| t.spec.desired_state == DesiredState::Running));
}

#[test]
fn a_port_published_through_the_mesh_joins_its_tasks_to_ingress() {
    let port = |mode| shoal_api::PortSpec {
        target: 80,
        published: Some(8080),
        mode,
        ..Default::default()
    };
    let mut svc = service(1);
    svc.spec.container.networks = vec![shoal_api::NetworkRef::Name("front".into())];
    svc.spec.container.ports = vec![port(shoal_api::PublishMode::Ingress)];
    let p = plan(&svc, &[]);
    let joined: Vec<&str> = p.creates[0]
        .spec
        .container
        .networks
        .iter()
        .map(|n| n.name())
        .collect();
    assert_eq!(joined, ["front", "ingress"], "its own networks first");
    svc.spec.container.ports = vec![port(shoal_api::PublishMode::Host)];
    let p = plan(&svc, &[]);
    assert_eq!(
        p.creates[0].spec.container.networks.len(),
        1,
        "a host port needs no mesh"
    );
}
