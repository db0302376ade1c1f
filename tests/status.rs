//! Status belongs to the system: a manifest's status is ignored, no client writes status
//! over the API, a Node cannot be made by apply (nodes join by running `shoal agent`)
//! but one that joined can be labelled and drained, and what a joining node claims is
//! checked before it is stored. Raw gRPC where the probe used it.

mod support;

use shoal_wire::pb;
use support::*;

struct Fixture<'a> {
    server: &'a Server,
    rt: tokio::runtime::Runtime,
}

impl Fixture<'_> {
    fn register(&self, req: pb::RegisterRequest) -> Result<(), tonic::Status> {
        let url = self.server.url.clone();
        let token = self.server.token();
        self.rt.block_on(async move {
            let creds = join_as(&url, &token, &req.name).await.expect("joins");
            let channel = shoal_wire::channel(&url, &creds).await.expect("connect");
            shoal_wire::agent_client(channel)
                .register(req)
                .await
                .map(drop)
        })
    }
}

fn joining(name: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: name.into(),
        labels: Default::default(),
        cpu: 2.0,
        memory_bytes: 1 << 30,
        address: "127.0.0.1:7799".into(),
        role: "worker".into(),
    }
}

fn a_manifest_status_is_ignored(f: &mut Fixture) {
    apply(
        f.server,
        "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {name: forged}\nspec: {image: x}\nstatus: {state: running, containerId: forged}\n",
    );
    let task = json(f.server.shoal(&["get", "task", "forged", "-o", "json"]));
    assert_ne!(task["status"]["containerId"], "forged", "{task}");
    assert_ne!(task["status"]["state"], "running", "{task}");
}

fn no_client_writes_status(f: &mut Fixture) {
    let url = f.server.url.clone();
    let refused = f.rt.block_on(async move {
        let mut client = shoal_wire::api_client(&url, &credentials_for(&url))
            .await
            .expect("connect");
        client
            .update_status(pb::UpdateStatusRequest {
                kind: "Task".into(),
                name: "forged".into(),
                status_json: r#"{"state":"failed"}"#.into(),
                resource_version: String::new(),
            })
            .await
    });
    match refused {
        Err(s) => assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}"),
        Ok(r) => panic!("status written by a client: {}", r.into_inner().json),
    }
    let task = json(f.server.shoal(&["get", "task", "forged", "-o", "json"]));
    assert_ne!(task["status"]["state"], "failed", "{task}");
}

fn a_node_cannot_be_made_by_apply(f: &mut Fixture) {
    let out = f.server.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Node\nmetadata: {name: ghost}\nspec: {availability: active}\n",
    );
    refused(out, "node/ghost has not joined");
    assert!(!f.server.shoal(&["get", "node", "ghost"]).status.success());
}

fn a_joined_node_is_labelled_and_drained_by_apply(f: &mut Fixture) {
    f.register(joining("joined")).expect("joins");
    apply(
        f.server,
        "apiVersion: shoal.dev/v1\nkind: Node\nmetadata: {name: joined, labels: {zone: eu}}\nspec: {availability: drain}\n",
    );
    let node = json(f.server.shoal(&["get", "node", "joined", "-o", "json"]));
    assert_eq!(node["metadata"]["labels"]["zone"], "eu", "{node}");
    assert_eq!(node["spec"]["availability"], "drain", "{node}");
    assert_eq!(
        node["status"]["address"], "127.0.0.1:7799",
        "what the node reported stays: {node}"
    );
}

/// One bad claim: what the refusal must say, and how it spoils a good request.
type BadClaim = (&'static str, fn(&mut pb::RegisterRequest));

fn what_a_joining_node_claims_is_checked(f: &mut Fixture) {
    let cases: [BadClaim; 5] = [
        ("cpu: NaN", |r| r.cpu = f64::NAN),
        ("cpu: -1", |r| r.cpu = -1.0),
        ("address: \"not an address\"", |r| {
            r.address = "not an address".into()
        }),
        ("role: \"boss\"", |r| r.role = "boss".into()),
        ("labels[\"Bad Key\"]", |r| {
            r.labels.insert("Bad Key".into(), "x".into());
        }),
    ];
    for (says, spoil) in cases {
        let mut req = joining("claims");
        spoil(&mut req);
        match f.register(req) {
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{says}: {s:?}");
                assert!(s.message().contains(says), "{says}: {}", s.message());
            }
            Ok(()) => panic!("{says}: joined"),
        }
        assert!(
            !f.server.shoal(&["get", "node", "claims"]).status.success(),
            "{says}: nothing stored"
        );
    }
}

fn a_task_bound_to_a_missing_node_says_so_once(f: &mut Fixture) {
    apply(
        f.server,
        "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {name: lost}\nspec: {image: x, node: nowhere}\n",
    );
    let says = "node nowhere does not exist";
    wait("the task says its node is missing", 20, || {
        let t = json(f.server.shoal(&["get", "task", "lost", "-o", "json"]));
        t["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(says))
    });
    // More scheduling rounds (any task change starts one) add no second Warning.
    apply(
        f.server,
        "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {name: another}\nspec: {image: x}\n",
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let warnings: Vec<serde_json::Value> = events_for(f.server, "task/lost")
        .into_iter()
        .filter(|e| e["reason"] == "NodeNotFound")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["count"], 1, "{warnings:?}");
}

#[test]
fn status_belongs_to_the_system() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(data.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    run_scenarios(
        &mut Fixture {
            server: &server,
            rt,
        },
        scenarios![
            a_manifest_status_is_ignored,
            no_client_writes_status,
            a_node_cannot_be_made_by_apply,
            a_joined_node_is_labelled_and_drained_by_apply,
            what_a_joining_node_claims_is_checked,
            a_task_bound_to_a_missing_node_says_so_once,
        ],
    );
}
