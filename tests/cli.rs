//! The new-user session from the foundation issue, against a real `shoal server`, on
//! both stores: apply, get, describe, diff, delete, bad manifests, restarts.

mod support;

use std::path::Path;

use support::*;

/// What the session's scenarios share: the server and a copy of the examples, changed
/// as the session goes.
struct Session<'a> {
    server: &'a mut Server,
    dir: String,
}

fn user_session(server: &mut Server) {
    let examples = examples_copy();
    let dir = examples.path().to_str().expect("utf8").to_string();
    run_scenarios(
        &mut Session { server, dir },
        scenarios![
            apply_creates_then_changes_nothing,
            diff_of_an_unchanged_directory_is_clean,
            an_edit_shows_in_diff_and_apply_configures_it,
            get_prints_every_format,
            describe_shows_the_spec_and_events,
            a_broken_manifest_changes_nothing_and_says_where,
            two_documents_for_one_object_are_refused_by_apply_and_diff,
            errors_from_the_server_name_the_file_and_document,
            syntax_errors_and_unknown_kinds_are_one_line_each,
            a_dry_run_reports_without_writing,
            a_restart_keeps_every_object,
            scale_patches_one_field_and_refuses_what_it_cannot,
            delete_by_name_and_by_file,
        ],
    );
}

fn apply_creates_then_changes_nothing(s: &mut Session) {
    let dir = s.dir.clone();
    let server = &*s.server;
    // First apply creates, second changes nothing.
    let out = ok(server.shoal(&["apply", "-f", &dir]));
    assert!(out.contains("service/web created"), "{out}");
    assert!(out.contains("network/front created"), "{out}");
    assert!(out.lines().all(|l| l.ends_with(" created")), "{out}");
    let out = ok(server.shoal(&["apply", "-f", &dir]));
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
}

fn diff_of_an_unchanged_directory_is_clean(s: &mut Session) {
    let dir = s.dir.clone();
    let server = &*s.server;
    // diff: nothing to change.
    let same = server.shoal(&["diff", "-f", &dir]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
}

fn an_edit_shows_in_diff_and_apply_configures_it(s: &mut Session) {
    let dir = s.dir.clone();
    let server = &*s.server;
    // Editing replicas: diff shows it (exit 1), apply configures it, generation moves.
    let web = Path::new(&dir).join("web.yaml");
    let text = std::fs::read_to_string(&web).expect("read");
    std::fs::write(&web, text.replace("replicas: 3", "replicas: 5")).expect("write");
    let d = server.shoal(&["diff", "-f", &dir]);
    assert_eq!(d.status.code(), Some(1), "{}", stderr(&d));
    assert!(stdout(&d).contains("+  replicas: 5"), "{}", stdout(&d));
    assert!(stdout(&d).contains("-  replicas: 3"), "{}", stdout(&d));
    let out = ok(server.shoal(&["apply", "-f", &dir]));
    assert!(out.contains("service/web configured"), "{out}");
    assert!(out.contains("network/front unchanged"), "{out}");
}

fn get_prints_every_format(s: &mut Session) {
    let server = &*s.server;
    // get in every format.
    let list = json(server.shoal(&["get", "services", "-o", "json"]));
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["spec"]["replicas"], 5);
    assert_eq!(items[0]["metadata"]["generation"], 2);
    let one = json(server.shoal(&["get", "svc", "web", "-o", "json"]));
    assert_eq!(one["metadata"]["name"], "web");
    assert!(one["metadata"]["uid"].is_string());
    assert_eq!(
        ok(server.shoal(&["get", "service", "-o", "name"])).trim(),
        "service/web"
    );
    let yaml = ok(server.shoal(&["get", "svc", "web", "-o", "yaml"]));
    assert!(
        yaml.contains("kind: Service") && yaml.contains("replicas: 5"),
        "{yaml}"
    );
    let table = ok(server.shoal(&["get", "svc"]));
    assert!(
        table.starts_with("NAME") && table.contains("web"),
        "{table}"
    );
    let wide = ok(server.shoal(&["get", "svc", "-o", "wide"]));
    assert!(wide.contains("app=web"), "{wide}");
    assert!(
        wide.contains(" httpd -f -p 8080 "),
        "COMMAND as a shell shows it: {wide}"
    );
    let selected = json(server.shoal(&["get", "svc", "-l", "app=web", "-o", "json"]));
    assert_eq!(selected["items"].as_array().map(Vec::len), Some(1));
    let none = json(server.shoal(&["get", "svc", "-l", "app=nope", "-o", "json"]));
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
}

fn describe_shows_the_spec_and_events(s: &mut Session) {
    let server = &*s.server;
    // describe shows spec and the events section.
    let desc = ok(server.shoal(&["describe", "service", "web"]));
    for part in [
        "Name:         web",
        "Kind:         Service",
        "Spec:",
        "replicas: 5",
        "Events:",
    ] {
        assert!(desc.contains(part), "missing {part:?} in:\n{desc}");
    }
}

fn a_broken_manifest_changes_nothing_and_says_where(s: &mut Session) {
    let dir = s.dir.clone();
    let server = &*s.server;
    // A broken manifest changes nothing and says where every problem is.
    let bad = Path::new(&dir).join("zz-bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: fine}\nspec: {image: x}\n---\n\
         apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: api}\nspec:\n  image: x\n  replicas: three\n  portz: [1]\n",
    )
    .expect("write bad");
    let applied = server.shoal(&["apply", "-f", bad.to_str().expect("utf8")]);
    assert!(!applied.status.success());
    let err = stderr(&applied);
    assert!(
        err.contains(
            "zz-bad.yaml: doc 2, line 11: spec.replicas: expected an integer, found \"three\""
        ),
        "{err}"
    );
    assert!(
        err.contains("zz-bad.yaml: doc 2, line 12: spec.portz: unknown field"),
        "{err}"
    );
    assert!(
        !server.shoal(&["get", "svc", "fine"]).status.success(),
        "nothing may be written"
    );
    let d = server.shoal(&["diff", "-f", bad.to_str().expect("utf8")]);
    assert_eq!(d.status.code(), Some(2), "diff errors exit 2");
    std::fs::remove_file(&bad).expect("rm");
}

fn two_documents_for_one_object_are_refused_by_apply_and_diff(s: &mut Session) {
    let server = &*s.server;
    let twice = "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: twice}\nspec: {image: a}\n---\n\
                 apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: twice}\nspec: {image: b}\n";
    // apply fails as it does on any bad input; diff says "error", not "differs" (1).
    for (verb, code) in [("apply", 1), ("diff", 2)] {
        let o = server.shoal_stdin(&[verb, "-f", "-"], twice);
        assert_eq!(o.status.code(), Some(code), "{verb}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("Service/twice appears twice"),
            "{verb}: {}",
            stderr(&o)
        );
    }
    assert!(!server.shoal(&["get", "svc", "twice"]).status.success());
}

fn errors_from_the_server_name_the_file_and_document(s: &mut Session) {
    let server = &*s.server;
    let dir = Path::new(&s.dir);
    // A stale resourceVersion: the conflict names where the manifest came from.
    let stale = dir.join("zz-stale.yaml");
    std::fs::write(
        &stale,
        "apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: front, resourceVersion: \"1\"}\nspec: {subnet: 10.10.1.0/24}\n",
    )
    .expect("write");
    let o = server.shoal(&["apply", "-f", stale.to_str().expect("utf8")]);
    std::fs::remove_file(&stale).expect("rm");
    refused(
        o,
        "zz-stale.yaml: doc 1: Network/front was changed by someone else",
    );
    // Past the server's limit of manifests in one apply: which document crossed it.
    let many: String = (0..10_001)
        .map(|i| format!("apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {{name: n{i}}}\nspec: {{}}\n---\n"))
        .collect();
    let o = server.shoal_stdin(&["apply", "-f", "-"], &many);
    refused(o, "doc 10001: past the limit of 10000 manifests");
    assert!(!server.shoal(&["get", "network", "n0"]).status.success());
}

fn syntax_errors_and_unknown_kinds_are_one_line_each(s: &mut Session) {
    let server = &*s.server;
    // Syntax errors and unknown kinds are one clear line each.
    let o = server.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: [x\n",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("<stdin>: doc 1, line"),
        "{}",
        stderr(&o)
    );
    let o = server.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    );
    assert!(
        stderr(&o).contains("line 1: apiVersion: unsupported apiVersion"),
        "{}",
        stderr(&o)
    );
    let o = server.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Event\nmetadata: {name: x}\ntype: Normal\nreason: R\nmessage: m\ninvolvedObject: {kind: Service, name: web}\ncount: 1\nfirstTimestamp: 2026-01-01T00:00:00Z\nlastTimestamp: 2026-01-01T00:00:00Z\n",
    );
    assert!(
        stderr(&o).contains("written by shoal itself"),
        "{}",
        stderr(&o)
    );
    let o = server.shoal(&["get", "deployments"]);
    assert!(
        !o.status.success() && stderr(&o).contains("unknown kind"),
        "{}",
        stderr(&o)
    );
}

fn a_dry_run_reports_without_writing(s: &mut Session) {
    let server = &*s.server;
    // Dry run reports without writing.
    let o = ok(server.shoal_stdin(
        &["apply", "--dry-run", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: back}\nspec: {driver: bridge}\n",
    ));
    assert!(o.contains("network/back created (dry run)"), "{o}");
    assert!(!server.shoal(&["get", "network", "back"]).status.success());
}

fn a_restart_keeps_every_object(s: &mut Session) {
    let dir = s.dir.clone();
    let server = &mut *s.server;
    // A restart keeps every object.
    server.restart();
    let nets = json(server.shoal(&["get", "networks", "-o", "json"]));
    assert_eq!(nets["items"][0]["spec"]["subnet"], "10.10.1.0/24", "{nets}");
    let svc = json(server.shoal(&["get", "svc", "web", "-o", "json"]));
    assert_eq!(svc["spec"]["replicas"], 5);
    let out = ok(server.shoal(&["apply", "-f", &dir]));
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");
}

fn scale_patches_one_field_and_refuses_what_it_cannot(s: &mut Session) {
    let server = &*s.server;
    let before = json(server.shoal(&["get", "svc", "web", "-o", "json"]));
    let out = ok(server.shoal(&["scale", "service/web=4"]));
    assert!(out.contains("service/web scaled to 4"), "{out}");
    let after = json(server.shoal(&["get", "svc", "web", "-o", "json"]));
    assert_eq!(after["spec"]["replicas"], 4);
    assert_eq!(
        after["spec"]["command"], before["spec"]["command"],
        "the rest stays"
    );
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["generation"].as_i64(),
        before["metadata"]["generation"].as_i64().map(|g| g + 1)
    );
    refused(
        server.shoal(&["scale", "service/nope=2"]),
        "Service/nope not found",
    );
    ok(server.shoal_stdin(
        &["apply", "-f", "-"],
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: everywhere}\nspec: {image: x, mode: global}\n",
    ));
    refused(
        server.shoal(&["scale", "service/everywhere=2"]),
        "only replicated services scale",
    );
    let untouched = json(server.shoal(&["get", "svc", "everywhere", "-o", "json"]));
    assert!(untouched["spec"].get("replicas").is_none(), "{untouched}");
    ok(server.shoal(&["delete", "service", "everywhere"]));
}

fn delete_by_name_and_by_file(s: &mut Session) {
    let dir = s.dir.clone();
    let server = &*s.server;
    // delete by name and by file.
    let out = ok(server.shoal(&["delete", "service", "web"]));
    assert!(out.contains("service/web deleted"), "{out}");
    let gone = server.shoal(&["get", "service", "web"]);
    assert!(
        !gone.status.success() && stderr(&gone).contains("not found"),
        "{}",
        stderr(&gone)
    );
    let out = ok(server.shoal(&[
        "delete",
        "-f",
        &Path::new(&dir).join("network.yaml").to_string_lossy(),
    ]));
    // The network controller's finalizer lets it go once its addresses are released.
    assert!(out.contains("network/front"), "{out}");
    wait("network/front gone", 10, || {
        !server.shoal(&["get", "network", "front"]).status.success()
    });
}

#[test]
fn new_user_session_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = Server::embedded(data.path());
    user_session(&mut server);
}

#[test]
fn new_user_session_on_etcd() {
    let etcd = Etcd::start();
    let mut server = Server::etcd(&etcd.address(), "etcd-session");
    user_session(&mut server);
}

/// Fifty writers at once on one object: every `scale` and every `apply` lands, because
/// the server retries them against the latest version instead of handing the user a
/// conflict.
fn parallel_writers_all_land(server: &Server) {
    let web = |replicas: usize| {
        format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: busy}}\nspec: {{image: x, replicas: {replicas}}}\n")
    };
    apply(server, &web(1));
    let failures = |outputs: Vec<std::process::Output>| -> Vec<String> {
        outputs
            .iter()
            .filter(|o| !o.status.success())
            .map(|o| stderr(o).trim().to_string())
            .collect()
    };
    let scales: Vec<std::process::Output> = std::thread::scope(|threads| {
        let running: Vec<_> = (1..=50)
            .map(|i| threads.spawn(move || server.shoal(&["scale", &format!("service/busy={i}")])))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("join"))
            .collect()
    });
    assert_eq!(failures(scales), Vec::<String>::new(), "every scale lands");
    let applies: Vec<std::process::Output> = std::thread::scope(|threads| {
        let running: Vec<_> = (1..=50)
            .map(|i| {
                let manifest = web(i);
                threads.spawn(move || server.shoal_stdin(&["apply", "-f", "-"], &manifest))
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("join"))
            .collect()
    });
    assert_eq!(failures(applies), Vec::<String>::new(), "every apply lands");
    let svc = json(server.shoal(&["get", "svc", "busy", "-o", "json"]));
    let replicas = svc["spec"]["replicas"].as_u64().unwrap_or(0);
    assert!((1..=50).contains(&replicas), "{svc}");
}

#[test]
fn parallel_writers_all_land_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("tempdir");
    parallel_writers_all_land(&Server::embedded(data.path()));
}

#[test]
fn parallel_writers_all_land_on_etcd() {
    let etcd = Etcd::start();
    parallel_writers_all_land(&Server::etcd(&etcd.address(), "parallel-writers"));
}

/// One size limit on both stores, with the same clear words (etcd alone said
/// "etcdserver: request is too large"), and nothing written.
fn an_object_over_the_size_limit_is_refused(server: &Server) {
    let big = "x".repeat(2 << 20);
    let manifest = format!(
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: big}}\nspec: {{image: x, env: {{BIG: {big}}}}}\n"
    );
    let err = refused(
        server.shoal_stdin(&["apply", "-f", "-"], &manifest),
        "Service/big would be",
    );
    assert!(err.contains("the limit is 1572864 bytes"), "{err}");
    assert!(!server.shoal(&["get", "svc", "big"]).status.success());
}

#[test]
fn an_object_over_the_size_limit_is_refused_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("tempdir");
    an_object_over_the_size_limit_is_refused(&Server::embedded(data.path()));
}

#[test]
fn an_object_over_the_size_limit_is_refused_on_etcd() {
    let etcd = Etcd::start();
    an_object_over_the_size_limit_is_refused(&Server::etcd(&etcd.address(), "size-limit"));
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(data.path());
    let held = "apiVersion: shoal.dev/v1\nkind: Network\nmetadata: {name: held, finalizers: [example.com/hold]}\nspec: {}\n";
    ok(server.shoal_stdin(&["apply", "-f", "-"], held));
    let out = ok(server.shoal(&["delete", "network", "held"]));
    assert!(out.contains("marked for deletion"), "{out}");
    let obj = json(server.shoal(&["get", "network", "held", "-o", "json"]));
    assert!(obj["metadata"]["deletionTimestamp"].is_string(), "{obj}");
    // Removing the finalizer completes the deletion.
    let released = held.replace(", finalizers: [example.com/hold]", "");
    ok(server.shoal_stdin(&["apply", "-f", "-"], &released));
    // Then the network controller's own finalizer, once it has released the addresses.
    wait("deleted once released", 10, || {
        !server.shoal(&["get", "network", "held"]).status.success()
    });
}

/// `shoal describe service web | head`: a reader that goes away ends the command
/// quietly, as kubectl and docker end, never with a panic and a backtrace; watches too.
#[test]
fn a_closed_stdout_ends_commands_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(&tmp.path().join("data"));
    let examples = examples_copy();
    ok(server.shoal(&["apply", "-f", examples.path().to_str().expect("utf8")]));
    for args in [
        &["describe", "service", "web"][..],
        &["get", "svc"],
        &["get", "svc", "-o", "yaml"],
        &["get", "svc", "-w"],
        &["events", "-w"],
    ] {
        let mut child = client(&server.url)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal");
        // The reader is gone before the first byte is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("shoal ends");
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "shoal {args:?}: {err}"
        );
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
            "shoal {args:?} ends as a closed pipe ends a program: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn unreachable_server_is_one_clear_error() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let o = shoal_at(&url, &["get", "svc"], None);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the shoal server at") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let o = shoal_at("http://127.0.0.1:1", &["completion", shell], None);
        assert!(
            o.status.success() && stdout(&o).contains("shoal"),
            "{shell}"
        );
    }
}
