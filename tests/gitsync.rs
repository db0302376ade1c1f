//! GitSync end to end: a real git server on loopback (`git daemon`, and
//! `git http-backend` under lighttpd), commits pushed by the test, a real `shoal server`
//! (embedded store, and etcd), and the CLI a user would run.

mod support;

use std::process::Command;
use std::time::Duration;

use shoal_testkit::git::{GitRepo, GitServer};
use support::*;

fn service(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  image: local/busybox:1\n  replicas: {replicas}\n"
    )
}

fn gitsync(name: &str, url: &str, interval: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: GitSync\nmetadata: {{name: {name}}}\nspec: {{url: \"{url}\", ref: main, path: deploy, interval: {interval}}}\n"
    )
}

fn replicas(server: &Server, name: &str) -> Option<u64> {
    let out = server.shoal(&["get", "service", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?["spec"]["replicas"].as_u64()
}

fn status(server: &Server, name: &str) -> serde_json::Value {
    json(server.shoal(&["get", "gitsync", name, "-o", "json"]))["status"].clone()
}

fn ready(server: &Server, name: &str) -> (String, String, String) {
    let st = status(server, name);
    let cond = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    (s(&cond["status"]), s(&cond["reason"]), s(&cond["message"]))
}

/// Waits until the GitSync has applied `revision`.
#[track_caller]
fn wait_applied(server: &Server, name: &str, revision: &str) {
    wait(&format!("gitsync/{name} to apply {revision}"), 30, || {
        status(server, name)["lastAppliedRevision"] == revision
    });
}

/// Posts to the webhook exactly as the README's curl line does.
fn call_webhook(
    server: &Server,
    name: &str,
    secret_file: &std::path::Path,
    secret_ok: bool,
) -> String {
    let key = if secret_ok {
        "$(cat \"$SECRET\")"
    } else {
        "wrong-key"
    };
    let script = format!(
        "body='{{\"ref\":\"refs/heads/main\"}}'\n\
         sig=$(printf %s \"$body\" | openssl dgst -sha256 -hmac \"{key}\" | cut -d' ' -f2)\n\
         curl -sS -X POST -H \"X-Hub-Signature-256: sha256=$sig\" -d \"$body\" -w ' %{{http_code}}' --cacert \"$CA\" \"$URL/hooks/gitsync/{name}\""
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("SECRET", secret_file)
        .env("URL", &server.url)
        .env("CA", server.data_dir.join("ca.pem"))
        .output()
        .expect("sh runs curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `shoal apply` of a live service with other annotations and replicas, as a user
/// editing the object by hand would.
fn hand_apply(server: &Server, name: &str, annotations: serde_json::Value, replicas: u32) {
    let live = json(server.shoal(&["get", "service", name, "-o", "json"]));
    let mut edited = serde_json::json!({
        "apiVersion": live["apiVersion"],
        "kind": "Service",
        "metadata": {"name": name, "labels": live["metadata"]["labels"], "annotations": annotations},
        "spec": live["spec"],
    });
    edited["spec"]["replicas"] = replicas.into();
    ok(server.shoal_stdin(&["apply", "-f", "-"], &edited.to_string()));
}

/// What the scenarios share: one git server and one store, changed as they go.
struct Sync<'a> {
    server: &'a Server,
    repo: &'a GitRepo,
    url: String,
    secret: std::path::PathBuf,
    /// `shoal events -w` from the start, for the scenario that reads the whole stream.
    events: Option<Spawned>,
    event_lines: std::sync::mpsc::Receiver<String>,
    /// The revision that pruned `api`: the last good one before the broken commit.
    pruned_at: String,
}

/// Everything the issue asks for, against one git server and one store.
fn exercise(server: &Server, repo: &GitRepo, url: &str, secret: &std::path::Path) {
    let mut events = server.spawn_shoal(&["events", "-w"]);
    let event_lines = lines_of(&mut events);
    let mut sync = Sync {
        server,
        repo,
        url: url.into(),
        secret: secret.into(),
        events: Some(events),
        event_lines,
        pruned_at: String::new(),
    };
    run_scenarios(
        &mut sync,
        scenarios![
            the_first_commit_is_applied_with_its_inventory,
            a_new_commit_is_applied_within_the_interval,
            a_deleted_file_is_pruned_and_hand_made_objects_stay,
            a_broken_manifest_applies_nothing_of_its_commit,
            claiming_a_hand_made_object_is_refused_as_a_whole,
            a_hand_edit_is_put_back_unless_the_object_opts_out,
            suspended_commits_wait_and_resume_applies_them,
            on_a_long_interval_the_webhook_or_sync_brings_commits,
            one_event_stream_shows_the_steps_and_their_effects,
            deleting_the_gitsync_removes_its_mirror_only,
        ],
    );
}

fn the_first_commit_is_applied_with_its_inventory(s: &mut Sync) {
    let server = s.server;
    let repo = s.repo;
    let url = s.url.as_str();
    // First commit, then a GitSync polling every second.
    repo.write("deploy/web.yaml", &service("web", 1));
    repo.write("deploy/apps/api.yaml", &service("api", 1));
    repo.write("README.md", "not a manifest, and outside the path\n");
    let first = repo.commit("web and api");
    // Made by hand, before any GitSync: never touched.
    apply(server, &service("manual", 1));
    apply(server, &gitsync("prod", url, "1s"));
    wait_applied(server, "prod", &first);
    assert_eq!(replicas(server, "web"), Some(1));
    let web = json(server.shoal(&["get", "service", "web", "-o", "json"]));
    assert_eq!(web["metadata"]["labels"]["shoal.dev/gitsync"], "prod");
    let st = status(server, "prod");
    let inventory: Vec<String> = st["inventory"]
        .as_array()
        .expect("inventory")
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["kind"].as_str().unwrap_or(""),
                e["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(inventory, ["Service/api", "Service/web"]);
    assert_eq!(ready(server, "prod").0, "True");
    let table = ok(server.shoal(&["get", "gitsyncs"]));
    assert!(
        table.contains("READY") && table.contains(&first[..12]),
        "{table}"
    );
}

fn a_new_commit_is_applied_within_the_interval(s: &mut Sync) {
    let server = s.server;
    let repo = s.repo;
    // A new commit is applied within the interval, without anyone asking.
    repo.write("deploy/web.yaml", &service("web", 2));
    let second = repo.commit("web: 2 replicas");
    wait_applied(server, "prod", &second);
    assert_eq!(replicas(server, "web"), Some(2));
}

fn a_deleted_file_is_pruned_and_hand_made_objects_stay(s: &mut Sync) {
    let server = s.server;
    let repo = s.repo;
    // A deleted file's objects are pruned; the hand-made service stays.
    repo.remove("deploy/apps/api.yaml");
    let third = repo.commit("api goes");
    wait_applied(server, "prod", &third);
    s.pruned_at = third;
    wait("api pruned", 10, || replicas(server, "api").is_none());
    assert_eq!(replicas(server, "manual"), Some(1));
}

fn a_broken_manifest_applies_nothing_of_its_commit(s: &mut Sync) {
    let server = s.server;
    let repo = s.repo;
    // A broken manifest: nothing in that commit is applied, not even its good change;
    // the status and a Warning say where it is broken; the last good revision stays.
    repo.write("deploy/web.yaml", &service("web", 3));
    repo.write(
        "deploy/bad.yaml",
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  image: local/busybox:1\n  replicas: lots\n",
    );
    let broken = repo.commit("broken");
    wait("the broken revision attempted", 30, || {
        status(server, "prod")["lastAttemptedRevision"] == broken.as_str()
    });
    let (ok_status, reason, message) = ready(server, "prod");
    assert_eq!(
        (ok_status.as_str(), reason.as_str()),
        ("False", "ValidationFailed")
    );
    assert!(
        message.contains("deploy/bad.yaml: doc 1, line 6: spec.replicas"),
        "{message}"
    );
    assert_eq!(
        status(server, "prod")["lastAppliedRevision"],
        s.pruned_at.as_str()
    );
    assert_eq!(replicas(server, "web"), Some(2));
    assert_eq!(replicas(server, "bad"), None);
    let warnings = ok(server.shoal(&["events", "--for", "gitsync/prod", "--types", "Warning"]));
    assert!(
        warnings.contains("SyncFailed") && warnings.contains("deploy/bad.yaml"),
        "{warnings}"
    );
}

fn claiming_a_hand_made_object_is_refused_as_a_whole(s: &mut Sync) {
    let server = s.server;
    let repo = s.repo;
    // Claiming the hand-made service is refused as a whole, and it is left as it is.
    repo.remove("deploy/bad.yaml");
    repo.write("deploy/manual.yaml", &service("manual", 4));
    let claim = repo.commit("claims manual");
    wait("the claiming revision attempted", 30, || {
        status(server, "prod")["lastAttemptedRevision"] == claim.as_str()
    });
    let (_, reason, message) = ready(server, "prod");
    assert_eq!(reason, "OwnershipConflict", "{message}");
    assert!(message.contains("Service/manual"), "{message}");
    assert_eq!(replicas(server, "manual"), Some(1));
    assert_eq!(
        replicas(server, "web"),
        Some(2),
        "nothing of that revision applies"
    );
    repo.remove("deploy/manual.yaml");
    let fixed = repo.commit("fixed");
    wait_applied(server, "prod", &fixed);
    assert_eq!(replicas(server, "web"), Some(3));
}

fn a_hand_edit_is_put_back_unless_the_object_opts_out(s: &mut Sync) {
    let server = s.server;
    // A hand edit is put back at the next sync, unless the object opts out.
    ok(server.shoal(&["scale", "service/web=7"]));
    wait("the hand edit reverted", 30, || {
        replicas(server, "web") == Some(3)
    });
    // The event is recorded right after the write that put the object back, so the
    // revert can be seen a moment before its event.
    wait("the drift reported on the service", 10, || {
        ok(server.shoal(&["events", "--for", "service/web"])).contains("DriftCorrected")
    });
    hand_apply(
        server,
        "web",
        serde_json::json!({"shoal.dev/reconcile": "disabled"}),
        5,
    );
    for _ in 0..2 {
        let last = status(server, "prod")["lastSyncTime"].clone();
        wait("another sync", 30, || {
            status(server, "prod")["lastSyncTime"] != last
        });
    }
    assert_eq!(
        replicas(server, "web"),
        Some(5),
        "reconcile: disabled is respected"
    );
    hand_apply(server, "web", serde_json::json!({}), 5);
    wait("reverted once enabled again", 30, || {
        replicas(server, "web") == Some(3)
    });
}

fn suspended_commits_wait_and_resume_applies_them(s: &mut Sync) {
    let server = s.server;
    let repo = s.repo;
    // Suspended: new commits wait; resumed: applied at once.
    assert_eq!(
        ok(server.shoal(&["gitsync", "suspend", "prod"])).trim(),
        "gitsync/prod suspended"
    );
    wait("suspended", 30, || ready(server, "prod").1 == "Suspended");
    repo.write("deploy/web.yaml", &service("web", 4));
    let while_suspended = repo.commit("while suspended");
    let refused = server.shoal(&["gitsync", "sync", "prod"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("suspended"),
        "{}",
        stderr(&refused)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        replicas(server, "web"),
        Some(3),
        "nothing syncs while suspended"
    );
    assert_ne!(
        status(server, "prod")["lastFetchedRevision"],
        while_suspended.as_str()
    );
    ok(server.shoal(&["gitsync", "resume", "prod"]));
    wait_applied(server, "prod", &while_suspended);
    assert_eq!(replicas(server, "web"), Some(4));
}

fn on_a_long_interval_the_webhook_or_sync_brings_commits(s: &mut Sync) {
    let server = s.server;
    let repo = s.repo;
    let url = s.url.as_str();
    let secret = s.secret.as_path();
    // With an interval of an hour, only the webhook or `gitsync sync` brings a commit in.
    apply(server, &gitsync("prod", url, "1h"));
    wait("the interval change handled", 30, || {
        let gs = json(server.shoal(&["get", "gitsync", "prod", "-o", "json"]));
        gs["status"]["observedGeneration"] == gs["metadata"]["generation"]
    });
    repo.write("deploy/web.yaml", &service("web", 5));
    let hooked = repo.commit("via webhook");
    let refused = call_webhook(server, "prod", secret, false);
    assert!(refused.ends_with(" 401"), "{refused}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        replicas(server, "web"),
        Some(4),
        "a bad signature syncs nothing"
    );
    let accepted = call_webhook(server, "prod", secret, true);
    assert!(
        accepted.contains("gitsync/prod: sync requested") && accepted.ends_with(" 202"),
        "{accepted}"
    );
    wait_applied(server, "prod", &hooked);
    assert_eq!(replicas(server, "web"), Some(5));

    repo.write("deploy/web.yaml", &service("web", 6));
    let manual = repo.commit("via the CLI");
    let synced = ok(server.shoal(&["gitsync", "sync", "prod"]));
    assert!(
        synced.contains("gitsync/prod synced") && synced.contains(&manual[..12]),
        "{synced}"
    );
    assert_eq!(replicas(server, "web"), Some(6));
}

fn one_event_stream_shows_the_steps_and_their_effects(s: &mut Sync) {
    let event_lines = &s.event_lines;
    // One stream: the GitSync's steps and what they caused.
    for needles in [
        &["gitsync/prod", "Fetched"][..],
        &[
            "gitsync/prod",
            "Applied",
            "created Service/api, Service/web",
        ],
        &["gitsync/prod", "Applied", "pruned Service/api"],
        &["gitsync/prod", "DriftCorrected", "Service/web"],
        &["gitsync/prod", "Suspended"],
        &["gitsync/prod", "Resumed"],
        &["service/web", "ScaledUp"],
    ] {
        wait(&format!("an event line with {needles:?}"), 10, || {
            event_lines
                .try_iter()
                .any(|line| needles.iter().all(|n| line.contains(n)))
        });
    }
    s.events.take();
}

fn deleting_the_gitsync_removes_its_mirror_only(s: &mut Sync) {
    let server = s.server;
    // Deleting the GitSync removes its mirror and leaves what it applied.
    let mirrors = server.data_dir.join("gitsync");
    let count = || std::fs::read_dir(&mirrors).map_or(0, |d| d.count());
    assert_eq!(count(), 1, "one mirror in {}", mirrors.display());
    ok(server.shoal(&["delete", "gitsync", "prod"]));
    wait("the mirror removed", 10, || count() == 0);
    assert_eq!(replicas(server, "web"), Some(6));
}

fn secret_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("webhook-secret");
    std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").expect("secret");
    path
}

#[test]
fn gitsync_over_git_daemon_on_the_embedded_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = GitRepo::new(&tmp.path().join("git"));
    let daemon = GitServer::daemon(&repo);
    let secret = secret_file(tmp.path());
    let flag = secret.display().to_string();
    let server = Server::embedded_with(&tmp.path().join("data"), &["--webhook-secret-file", &flag]);
    exercise(&server, &repo, &daemon.url, &secret);
}

#[test]
fn gitsync_over_smart_http_on_etcd() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start();
    let repo = GitRepo::new(&tmp.path().join("git"));
    let http = GitServer::http(&repo);
    let secret = secret_file(tmp.path());
    let flag = secret.display().to_string();
    let server = Server::etcd_with(
        &etcd.address(),
        "gitsync-etcd",
        &["--webhook-secret-file", &flag],
    );
    exercise(&server, &repo, &http.url, &secret);
}

/// ssh through the system's ssh client, configured the way a server operator would
/// (`GIT_SSH_COMMAND` in the server's environment): a commit is applied, then the next.
#[test]
fn gitsync_over_ssh() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = GitRepo::new(&tmp.path().join("git"));
    let sshd = GitServer::ssh(&repo);
    let command = sshd.ssh_command.clone().expect("ssh command");
    let server = Server::embedded_env(
        &tmp.path().join("data"),
        &[],
        &[("GIT_SSH_COMMAND", command.as_str())],
    );
    repo.write("deploy/web.yaml", &service("web", 1));
    let first = repo.commit("web");
    apply(&server, &gitsync("prod", &sshd.url, "1s"));
    wait_applied(&server, "prod", &first);
    repo.write("deploy/web.yaml", &service("web", 2));
    let second = repo.commit("web: 2");
    wait_applied(&server, "prod", &second);
    assert_eq!(replicas(&server, "web"), Some(2));
}

/// A GitSync writes objects one by one, so it can write a task before the network it
/// names (the API server refuses that apply; a sync cannot wait for order): the task
/// is not left waiting in silence. It says which network it waits for, with a Warning,
/// and once a later commit brings the network it gets its address.
#[test]
fn a_task_synced_before_its_network_says_so_then_gets_its_address() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = GitRepo::new(&tmp.path().join("git"));
    let daemon = GitServer::daemon(&repo);
    let server = Server::embedded(&tmp.path().join("data"));
    repo.write(
        "deploy/solo.yaml",
        "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {name: solo}\nspec: {image: local/busybox:1, networks: [later]}\n",
    );
    let first = repo.commit("a task on a network not there yet");
    apply(&server, &gitsync("nets", &daemon.url, "1s"));
    wait_applied(&server, "nets", &first);
    let task = || json(server.shoal(&["get", "task", "solo", "-o", "json"]));
    let says = "waiting for network later: it does not exist";
    wait("the task says what it waits for", 10, || {
        task()["status"]["message"] == says
    });
    let warned = events_for(&server, "task/solo")
        .iter()
        .any(|e| e["reason"] == "NetworkNotFound" && e["type"] == "Warning");
    assert!(warned, "{:?}", events_for(&server, "task/solo"));
    repo.write(
        "deploy/later.yaml",
        "apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: later}\nspec: {}\n",
    );
    let second = repo.commit("the network");
    wait_applied(&server, "nets", &second);
    wait("the task has its address and no longer waits", 20, || {
        let t = task();
        t["status"]["attachments"][0]["network"] == "later"
            && t["status"]["message"]
                .as_str()
                .is_none_or(|m| !m.starts_with("waiting for"))
    });
}
