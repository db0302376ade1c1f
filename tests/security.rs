//! Identities come from certificates: the probes that used to work against the agent
//! API (re-registering another node, reading its tasks, completing its tasks,
//! registering as a manager) are each refused, as is a valid token joining under the
//! name of a node that is up; a node certificate cannot use the
//! admin API, nor a client without one; a renewal keeps the certificate before it
//! and voids older ones; a removed node's certificate stops working at once; a node
//! gets the secrets of its own live tasks and no others; and a server listening beyond
//! loopback opens no plaintext port. Raw gRPC
//! where the probes used it, simulated nodes (`shoal sim`) as the cluster.

mod support;

use std::process::Command;
use std::time::Duration;

use shoal_wire::{pb, Credentials};
use support::*;
use tonic::Code;

struct Fixture {
    server: Server,
    _sim: Sim,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn join(&self, name: &str) -> Credentials {
        let (url, token) = (self.server.url.clone(), self.server.token());
        let name = name.to_string();
        self.rt
            .block_on(async move { join_as(&url, &token, &name).await })
            .expect("joins with a valid token")
    }

    fn agent(
        &self,
        creds: &Credentials,
    ) -> pb::agent_client::AgentClient<tonic::transport::Channel> {
        let url = self.server.url.clone();
        let creds = creds.clone();
        let channel = self
            .rt
            .block_on(async move { shoal_wire::channel(&url, &creds).await })
            .expect("connect");
        shoal_wire::agent_client(channel)
    }

    fn node(&self, name: &str) -> serde_json::Value {
        json(self.server.shoal(&["get", "node", name, "-o", "json"]))
    }

    /// A task the simulated node `sim-1` runs.
    fn task_on_sim_1(&self) -> serde_json::Value {
        tasks(&self.server, "web")
            .into_iter()
            .find(|t| t["spec"]["node"] == "sim-1" && state(t) == "running")
            .expect("a running task on sim-1")
    }
}

fn register(node: &str, role: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: node.into(),
        labels: Default::default(),
        cpu: 0.001,
        memory_bytes: 1,
        address: "10.9.9.9:1".into(),
        role: role.into(),
    }
}

/// sim-1 saying `task` completed.
fn complete(task: &serde_json::Value) -> pb::ReportStatusRequest {
    pb::ReportStatusRequest {
        node: "sim-1".into(),
        reports: vec![pb::TaskStatusReport {
            task: task["metadata"]["name"].as_str().unwrap_or_default().into(),
            uid: task["metadata"]["uid"].as_str().unwrap_or_default().into(),
            status_json: r#"{"state":"complete","exitCode":0}"#.into(),
        }],
    }
}

#[track_caller]
fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>, code: Code, says: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert!(s.message().contains(says), "{what}: {}", s.message());
        }
        Ok(v) => panic!("{what}: allowed: {v:?}"),
    }
}

/// sim-1 as it was: ready, at its own address, with its own CPUs.
fn sim_1_unchanged(f: &Fixture) {
    let node = f.node("sim-1");
    assert_eq!(node["status"]["state"], "ready", "{node}");
    assert_eq!(node["status"]["address"], "127.0.0.1", "{node}");
    assert_eq!(node["status"]["resources"]["cpu"], 4.0, "{node}");
}

fn a_client_without_a_certificate_gets_nothing(f: &mut Fixture) {
    let trust = Credentials {
        ca_pem: f.server.credentials().ca_pem,
        identity: None,
    };
    let mut agent = f.agent(&trust);
    let task = f.task_on_sim_1();
    let rt = &f.rt;
    denied(
        "register as sim-1",
        rt.block_on(agent.register(register("sim-1", "worker"))),
        Code::Unauthenticated,
        "no client certificate",
    );
    denied(
        "sim-1's assignments",
        rt.block_on(agent.assignments(pb::AssignmentsRequest {
            node: "sim-1".into(),
        })),
        Code::Unauthenticated,
        "no client certificate",
    );
    denied(
        "complete sim-1's task",
        rt.block_on(agent.report_status(complete(&task))),
        Code::Unauthenticated,
        "no client certificate",
    );
    let url = f.server.url.clone();
    let listed = rt.block_on(async move {
        let mut api = shoal_wire::api_client(&url, &trust).await.expect("connect");
        api.list(pb::ListRequest {
            kind: "Node".into(),
            ..Default::default()
        })
        .await
    });
    denied(
        "list nodes",
        listed,
        Code::Unauthenticated,
        "admin certificate",
    );
    sim_1_unchanged(f);
}

fn a_node_cannot_act_for_another(f: &mut Fixture) {
    let creds = f.join("intruder");
    let mut agent = f.agent(&creds);
    let task = f.task_on_sim_1();
    let name = task["metadata"]["name"].as_str().expect("name").to_string();
    let rt = &f.rt;
    denied(
        "intruder registers as sim-1",
        rt.block_on(agent.register(register("sim-1", "worker"))),
        Code::PermissionDenied,
        "cannot act for node \"sim-1\"",
    );
    denied(
        "intruder reads sim-1's assignments",
        rt.block_on(agent.assignments(pb::AssignmentsRequest {
            node: "sim-1".into(),
        })),
        Code::PermissionDenied,
        "cannot act for node \"sim-1\"",
    );
    denied(
        "intruder completes sim-1's task as sim-1",
        rt.block_on(agent.report_status(complete(&task))),
        Code::PermissionDenied,
        "cannot act for node \"sim-1\"",
    );
    // As itself, it may report only tasks of its own.
    let mut as_itself = complete(&task);
    as_itself.node = "intruder".into();
    let refused = rt
        .block_on(agent.report_status(as_itself))
        .expect("a report is answered")
        .into_inner()
        .errors;
    assert!(
        refused
            .iter()
            .any(|e| e.contains("not assigned to node intruder")),
        "{refused:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    sim_1_unchanged(f);
    let after = tasks(&f.server, "web")
        .into_iter()
        .find(|t| t["metadata"]["name"] == name.as_str())
        .expect("the task");
    assert_eq!(state(&after), "running", "{after}");
}

/// A standalone task on `node` that names the secret `vault-key`.
fn vaulted_task(name: &str, node: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {{name: {name}}}\nspec:\n  \
         image: web:1\n  node: {node}\n  secrets: [{{name: vault-key}}]\n"
    )
}

fn a_node_gets_only_the_secrets_of_its_own_live_tasks(f: &mut Fixture) {
    let server = &f.server;
    ok(server.shoal_stdin(&["secret", "create", "vault-key", "-f", "-"], "open-sesame"));
    apply(server, &vaulted_task("vaulted", "sim-1"));
    apply(server, &vaulted_task("snoops-own", "snoop"));
    let creds = f.join("snoop");
    let mut agent = f.agent(&creds);
    let rt = &f.rt;
    let mut files = |node: &str, task: &str| {
        rt.block_on(agent.task_files(pb::TaskFilesRequest {
            node: node.into(),
            task: task.into(),
        }))
    };
    denied(
        "snoop asks for sim-1's task's secrets",
        files("snoop", "vaulted"),
        Code::PermissionDenied,
        "not a task of node/snoop",
    );
    denied(
        "snoop asks for them as sim-1",
        files("sim-1", "vaulted"),
        Code::PermissionDenied,
        "cannot act for node \"sim-1\"",
    );
    let given = files("snoop", "snoops-own")
        .expect("its own task's secrets")
        .into_inner()
        .files;
    assert_eq!(
        given,
        [pb::TaskFile {
            kind: "Secret".into(),
            name: "vault-key".into(),
            data: b"open-sesame".to_vec(),
        }]
    );
    // Only while the task is meant to run there.
    ok(server.shoal(&["delete", "task", "snoops-own"]));
    denied(
        "snoop asks for a task it no longer runs",
        files("snoop", "snoops-own"),
        Code::PermissionDenied,
        "not a task of node/snoop",
    );
    let mut admin = f.agent(&server.credentials());
    denied(
        "an admin asks as sim-1 through the agent API",
        f.rt.block_on(admin.task_files(pb::TaskFilesRequest {
            node: "sim-1".into(),
            task: "vaulted".into(),
        })),
        Code::PermissionDenied,
        "",
    );
    refused(
        server.shoal(&["secret", "rm", "vault-key"]),
        "secret/vault-key is in use by task/vaulted",
    );
    ok(server.shoal(&["delete", "task", "vaulted"]));
    wait("vault-key removed once nothing uses it", 30, || {
        server
            .shoal(&["secret", "rm", "vault-key"])
            .status
            .success()
    });
}

fn a_token_cannot_join_as_a_node_that_is_there(f: &mut Fixture) {
    let (url, token) = (f.server.url.clone(), f.server.token());
    let joined =
        f.rt.block_on(async move { join_as(&url, &token, "sim-1").await });
    denied(
        "join as sim-1",
        joined.map(drop),
        Code::AlreadyExists,
        "is up in the cluster",
    );
    sim_1_unchanged(f);
}

fn a_worker_cannot_register_as_a_manager(f: &mut Fixture) {
    let creds = f.join("climber");
    let mut agent = f.agent(&creds);
    denied(
        "worker registers as manager",
        f.rt.block_on(agent.register(register("climber", "manager"))),
        Code::PermissionDenied,
        "cannot register a manager",
    );
    assert!(
        !f.server.shoal(&["get", "node", "climber"]).status.success(),
        "no node stored"
    );
    // As a worker it joins.
    f.rt.block_on(agent.register(register("climber", "worker")))
        .expect("registers as itself");
    assert_eq!(f.node("climber")["spec"]["role"], "worker");
}

fn a_node_certificate_cannot_use_the_admin_api(f: &mut Fixture) {
    let creds = f.join("curious");
    let url = f.server.url.clone();
    let listed = f.rt.block_on(async move {
        let mut api = shoal_wire::api_client(&url, &creds).await.expect("connect");
        api.list(pb::ListRequest {
            kind: "Task".into(),
            ..Default::default()
        })
        .await
    });
    denied(
        "node lists tasks",
        listed,
        Code::PermissionDenied,
        "may not use the admin API",
    );
}

/// Renews `creds`' node `name` through the agent API: the new credentials.
fn renew(f: &Fixture, creds: &Credentials, name: &str) -> Credentials {
    let (key_pem, csr_pem) = shoal_pki::new_key_and_csr(name).expect("key and CSR");
    let mut agent = f.agent(creds);
    let renewed =
        f.rt.block_on(agent.renew(pb::RenewRequest {
            node: name.into(),
            csr_pem,
            sans: Vec::new(),
        }))
        .expect("renewed")
        .into_inner();
    Credentials {
        ca_pem: creds.ca_pem.clone(),
        identity: Some(
            shoal_wire::LiveIdentity::from_pem(renewed.cert_pem.as_bytes(), key_pem.as_bytes())
                .expect("the renewed certificate"),
        ),
    }
}

fn a_renewed_certificate_replaces_the_one_before_last(f: &mut Fixture) {
    let first = f.join("renewer");
    let second = renew(f, &first, "renewer");
    let third = renew(f, &second, "renewer");
    let register = |creds: &Credentials| {
        f.rt.block_on(f.agent(creds).register(register("renewer", "worker")))
            .map(drop)
    };
    register(&third).expect("the newest works");
    register(&second).expect("the one before stays good across the renewal");
    denied(
        "the first, two renewals ago",
        register(&first),
        Code::PermissionDenied,
        "revoked",
    );
    // A node renews only itself.
    let (_, csr_pem) = shoal_pki::new_key_and_csr("sim-1").expect("csr");
    let mut agent = f.agent(&third);
    denied(
        "renew as sim-1",
        f.rt.block_on(agent.renew(pb::RenewRequest {
            node: "sim-1".into(),
            csr_pem,
            sans: Vec::new(),
        })),
        Code::PermissionDenied,
        "cannot act for node \"sim-1\"",
    );
}

fn a_removed_nodes_certificate_stops_working_at_once(f: &mut Fixture) {
    let creds = f.join("doomed");
    let mut agent = f.agent(&creds);
    let lease =
        f.rt.block_on(agent.register(register("doomed", "worker")))
            .expect("registers")
            .into_inner()
            .lease;
    let mut assignments =
        f.rt.block_on(agent.assignments(pb::AssignmentsRequest {
            node: "doomed".into(),
        }))
        .expect("its assignments")
        .into_inner();
    refused(
        f.server.shoal(&["node", "rm", "doomed"]),
        "node doomed is ready",
    );
    let out = ok(f.server.shoal(&["node", "rm", "doomed", "--force"]));
    assert!(out.contains("revoked"), "{out}");
    // The stream it holds open ends, saying why.
    let ended = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match assignments.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await
    });
    denied(
        "the open assignment stream",
        ended.expect("ends within 5 s"),
        Code::PermissionDenied,
        "revoked",
    );
    denied(
        "heartbeat after rm",
        f.rt.block_on(agent.heartbeat(pb::HeartbeatRequest {
            node: "doomed".into(),
            lease,
        })),
        Code::PermissionDenied,
        "revoked",
    );
    denied(
        "register after rm",
        f.rt.block_on(agent.register(register("doomed", "worker"))),
        Code::PermissionDenied,
        "revoked",
    );
    assert!(
        !f.server.shoal(&["get", "node", "doomed"]).status.success(),
        "the node is gone and stays gone"
    );
}

fn no_plaintext_port_beyond_loopback(f: &mut Fixture) {
    let dir = tempfile::tempdir().expect("tmp");
    let wide = Server::embedded_wide(dir.path());
    let pid = wide.pid().expect("running");
    let ss = Command::new("ss")
        .arg("-ltnpH")
        .output()
        .expect("ss (iproute2)");
    let of_server: String = stdout(&ss)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(|l| format!("{l}\n"))
        .collect();
    let open = listening_beyond_loopback(&of_server);
    assert!(
        !open.is_empty(),
        "the server listens beyond loopback: {of_server}"
    );
    for (addr, port) in &open {
        // Reached at this machine's loopback: the same socket, as the wildcard holds it.
        let at = format!("127.0.0.1:{port}");
        only_tls(&f.rt, &at).unwrap_or_else(|e| panic!("{addr}:{port}: {e}"));
    }
    // And plaintext beyond loopback is refused outright.
    let refused_dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "server",
            "--insecure",
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
        ])
        .arg("--data-dir")
        .arg(refused_dir.path())
        .env("HOME", refused_dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("plaintext is served on loopback only"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn identities_come_from_certificates() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::embedded(&dir.path().join("server"));
    let sim = server.sim(&["--nodes", "2"]);
    wait("two simulated nodes", 30, || {
        let nodes = json(server.shoal(&["get", "nodes", "-o", "json"]));
        nodes["items"].as_array().map_or(0, |n| n.len()) == 2
    });
    apply(
        &server,
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: web:1, replicas: 4}\n",
    );
    wait("web's tasks on sim-1 running", 30, || {
        tasks(&server, "web")
            .iter()
            .any(|t| t["spec"]["node"] == "sim-1" && state(t) == "running")
    });
    let mut f = Fixture {
        server,
        _sim: sim,
        rt: tokio::runtime::Runtime::new().expect("runtime"),
        _dir: dir,
    };
    run_scenarios(
        &mut f,
        scenarios![
            a_client_without_a_certificate_gets_nothing,
            a_node_cannot_act_for_another,
            a_node_gets_only_the_secrets_of_its_own_live_tasks,
            a_token_cannot_join_as_a_node_that_is_there,
            a_worker_cannot_register_as_a_manager,
            a_node_certificate_cannot_use_the_admin_api,
            a_renewed_certificate_replaces_the_one_before_last,
            a_removed_nodes_certificate_stops_working_at_once,
            no_plaintext_port_beyond_loopback,
        ],
    );
}
