//! The node agent end to end, as root, with real runc and a real registry: a service's
//! tasks run as containers from a pulled image, their output lands in json-file logs
//! that `shoal logs` reads (merged, tailed, followed), `shoal exec` runs in them,
//! `shoal run`/`ps`/`stop`/`rm` work on one-off tasks, a
//! killed container is replaced, a job completes, a failing command fails with its exit
//! code, an unknown image is refused clearly, an unhealthy task is replaced, `kill -9`
//! of the agent leaves containers running and a new agent takes them back, and deleting
//! the service stops and removes the containers, their mounts and files, once each task
//! has seen its container gone.
//!
//! One registry, server and agent serve every scenario; each scenario is named, runs even
//! when one before it failed, and cleans up what it made (`SHOAL_SCENARIO=NAME` runs one).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testkit::Registry;
use support::node::{remove_containers, Node};
use support::*;

/// The container ids of the live running web tasks, sorted.
fn running_ids(server: &Server) -> Vec<String> {
    let mut ids: Vec<String> = tasks(server, "web")
        .iter()
        .filter(|t| is_live(t) && state(t) == "running")
        .filter_map(|t| t["status"]["containerId"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// What the scenarios share: a registry with the test image, a server and one agent.
/// The web service every scenario may lean on: two running tasks (applied again, which
/// changes nothing, when it already runs).
fn web_running(server: &Server) {
    apply(
        server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  \
             image: {}\n  command: [sh, -c, 'echo hello from $HOSTNAME; while true; do sleep 1; done']\n  \
             replicas: 2\n  restart: {{delay: 0s}}\n",
            WEB_IMAGE.get().expect("the image is set first")
        ),
    );
    wait("two running web tasks", 60, || {
        tasks(server, "web")
            .iter()
            .filter(|t| is_live(t) && state(t) == "running")
            .count()
            == 2
    });
}

static WEB_IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The container of a task.
fn container_of(server: &Server, task: &str) -> String {
    let t = json(server.shoal(&["get", "task", task, "-o", "json"]));
    t["status"]["containerId"]
        .as_str()
        .unwrap_or_else(|| panic!("{task} has no container: {t}"))
        .to_string()
}

#[test]
fn the_agent_runs_tasks_as_real_containers() {
    let mut node = Node::start("shoaltest0", "10.231.0.0/24");
    let _ = WEB_IMAGE.set(node.image.clone());
    run_scenarios(
        &mut node,
        scenarios![
            service_tasks_run_as_containers_with_logs_and_exec,
            a_killed_container_fails_its_task_and_is_replaced,
            a_killed_agent_leaves_containers_running_and_its_successor_adopts_them,
            jobs_complete_and_failing_commands_report_their_exit_code,
            unhealthy_tasks_fail_and_are_replaced,
            published_ports_and_task_to_task_traffic,
            docker_run_ps_stop_start_rename_and_exec,
            docker_run_container_flags,
            log_rotation_and_restart_in_place,
            a_deleted_service_keeps_its_tasks_until_their_containers_are_gone,
            deleting_everything_removes_every_container_mount_and_file,
        ],
    );
}

fn service_tasks_run_as_containers_with_logs_and_exec(c: &mut Node) {
    let server = &c.server;
    let agent = &mut c.agent;
    let image = c.image.clone();
    // A service: pulled, started, running, its output in the json-file log.
    web_running(server);
    assert_eq!(agent.running().len(), 2);
    let web1 = tasks(server, "web")
        .into_iter()
        .find(|t| t["metadata"]["name"] == "web.1")
        .expect("web.1");
    let id = web1["status"]["containerId"]
        .as_str()
        .expect("container id")
        .to_string();
    let log = agent
        .data
        .join("containers")
        .join(&id)
        .join("container.log");
    wait("web.1 logged", 10, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("hello from web.1"))
    });
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .expect("log")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("json-file line");
    assert_eq!(first["stream"], "stdout");
    assert!(first["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // `shoal logs`: from the agent, through the server, merged across tasks.
    let all = ok(server.shoal(&["logs", "service/web"]));
    assert!(all.contains("web.1@node-1 | hello from web.1"), "{all}");
    assert!(all.contains("web.2@node-1 | hello from web.2"), "{all}");
    let one = ok(server.shoal(&["logs", "task/web.2", "--tail", "1", "--timestamps"]));
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(
        one.ends_with("hello from web.2\n") && one.contains('Z'),
        "{one}"
    );
    let err = String::from_utf8_lossy(&server.shoal(&["logs", "service/nope"]).stderr).to_string();
    assert!(err.contains("not found"), "{err}");
    // `shoal exec` runs in the container and exits with the command's code.
    let out = server.shoal(&[
        "exec",
        "web.1",
        "--",
        "sh",
        "-c",
        "echo in $(hostname); echo oops >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in web.1\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let out = server.shoal(&["exec", "task/web.2", "--", "cat", "/www/index.html"]);
    assert_eq!(ok(out), "hello from shoal\n");
    let err = String::from_utf8_lossy(&server.shoal(&["exec", "nope.1", "--", "true"]).stderr)
        .to_string();
    assert!(err.contains("not found"), "{err}");

    // -f follows new output as it is written.
    apply(
        server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {{name: ticker}}\nspec:\n  \
             image: {image}\n  command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done']\n"
        ),
    );
    wait("ticker running", 30, || {
        state(&json(
            server.shoal(&["get", "task", "ticker", "-o", "json"]),
        )) == "running"
    });
    let mut follower = server.spawn_shoal(&["logs", "-f", "task/ticker", "--tail", "1"]);
    let rx = lines_of(&mut follower);
    let mut seen: Vec<u32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 5 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            seen.extend(
                line.strip_prefix("tick ")
                    .and_then(|n| n.parse::<u32>().ok()),
            );
        }
    }
    drop(follower);
    assert!(seen.len() >= 5, "followed lines: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost: {seen:?}"
    );
    ok(server.shoal(&["delete", "task", "ticker"]));
    wait("the ticker stopped", 30, || agent.running().len() == 2);
}

fn a_killed_container_fails_its_task_and_is_replaced(c: &mut Node) {
    let server = &c.server;
    let agent = &mut c.agent;
    web_running(server);
    let id = container_of(server, "web.1");
    // Kill the container: the task fails with the signal's code and is replaced.
    agent.runc(&["kill", &id, "KILL"]);
    wait("web.1 replaced", 30, || {
        let all = tasks(server, "web");
        let failed = all
            .iter()
            .any(|t| !is_live(t) && state(t) == "failed" && t["status"]["exitCode"] == 137);
        let running = all
            .iter()
            .filter(|t| is_live(t) && state(t) == "running")
            .count();
        failed && running == 2
    });
}

fn a_killed_agent_leaves_containers_running_and_its_successor_adopts_them(c: &mut Node) {
    let server = &c.server;
    let agent = &mut c.agent;
    web_running(server);
    // kill -9 of the agent leaves the containers running; a new agent takes them back
    // (same containers, no restarts) and supervises them again.
    let before = running_ids(server);
    let survivors = agent.kill_and_restart();
    assert_eq!(
        survivors.len(),
        2,
        "containers outlive the agent: {survivors:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    wait("the new agent reports the same containers", 30, || {
        running_ids(server) == before && agent.running().len() == 2
    });
    let adopted = before[0].clone();
    agent.runc(&["kill", &adopted, "KILL"]);
    wait("an adopted container's death is noticed", 30, || {
        let ids = running_ids(server);
        ids.len() == 2 && !ids.contains(&adopted)
    });
}

fn jobs_complete_and_failing_commands_report_their_exit_code(c: &mut Node) {
    let server = &c.server;
    let image = c.image.clone();
    let registry = &c.registry;
    // A job runs to completion; a failing command reports its exit code.
    apply(
        server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: once}}\nspec:\n  \
             image: {image}\n  command: [sh, -c, 'echo done']\n  mode: job\n---\n\
             apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {{name: broken}}\nspec:\n  \
             image: {image}\n  command: [sh, -c, 'exit 3']\n---\n\
             apiVersion: shoal.dev/v1\nkind: Task\nmetadata: {{name: ghost}}\nspec:\n  \
             image: {}/shoal-test/nope:1\n",
            registry.address()
        ),
    );
    wait("the job completes", 60, || {
        tasks(server, "once")
            .iter()
            .any(|t| state(t) == "complete" && t["status"]["exitCode"] == 0)
    });
    wait("broken fails with 3", 30, || {
        let t = json(server.shoal(&["get", "task", "broken", "-o", "json"]));
        state(&t) == "failed" && t["status"]["exitCode"] == 3
    });
    wait("ghost is refused", 30, || {
        let t = json(server.shoal(&["get", "task", "ghost", "-o", "json"]));
        state(&t) == "rejected"
            && t["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("manifest unknown"))
    });
    ok(server.shoal(&["delete", "service", "once"]));
    ok(server.shoal(&["delete", "task", "broken"]));
    ok(server.shoal(&["delete", "task", "ghost"]));
}

fn unhealthy_tasks_fail_and_are_replaced(c: &mut Node) {
    let server = &c.server;
    let image = c.image.clone();
    // Health checks run inside the container: healthy first; then unhealthy, which
    // fails the task, and its service replaces it.
    apply(
        server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: sick}}\nspec:\n  \
             image: {image}\n  command: [sh, -c, 'touch /tmp/ok; sleep 3; rm /tmp/ok; while true; do sleep 1; done']\n  \
             restart: {{delay: 0s}}\n  \
             healthcheck: {{cmd: [test, -f, /tmp/ok], interval: 300ms, timeout: 2s, retries: 2}}\n"
        ),
    );
    wait("sick.1 healthy", 30, || {
        tasks(server, "sick")
            .iter()
            .any(|t| is_live(t) && t["status"]["health"] == "healthy")
    });
    wait("the unhealthy task failed and was replaced", 60, || {
        let all = tasks(server, "sick");
        let failed = all.iter().any(|t| {
            !is_live(t)
                && state(t) == "failed"
                && t["status"]["health"] == "unhealthy"
                && t["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("health check failed"))
        });
        failed && all.iter().any(|t| is_live(t) && state(t) == "running")
    });
    ok(server.shoal(&["delete", "service", "sick"]));
}

fn published_ports_and_task_to_task_traffic(c: &mut Node) {
    let server = &c.server;
    let image = c.image.clone();
    // The node network: each task has an address on the bridge; a published ingress
    // port on the node spreads connections over the service's tasks.
    let published = free_port();
    apply(
        server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: site}}\nspec:\n  \
             image: {image}\n  replicas: 2\n  ports: [{{target: 8080, published: {published}}}]\n  \
             command: [sh, -c, 'mkdir -p /site && echo $HOSTNAME > /site/index.html && httpd -f -p 8080 -h /site']\n"
        ),
    );
    wait("two running site tasks", 60, || {
        tasks(server, "site")
            .iter()
            .filter(|t| is_live(t) && state(t) == "running")
            .count()
            == 2
    });
    let addresses: Vec<String> = tasks(server, "site")
        .iter()
        .filter_map(|t| {
            let a = t["status"]["addresses"][0].as_str()?;
            Some(a.strip_prefix("bridge=").unwrap_or(a).to_string())
        })
        .collect();
    assert_eq!(addresses.len(), 2, "each task has an address");
    assert!(
        addresses.iter().all(|a| a.starts_with("10.231.0.")),
        "{addresses:?}"
    );
    let get = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", published)).expect("connect");
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("request");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.lines().last().unwrap_or_default().trim().to_string()
    };
    let mut answered: Vec<String> = (0..4).map(|_| get()).collect();
    answered.sort();
    answered.dedup();
    assert_eq!(
        answered,
        ["site.1", "site.2"],
        "both tasks answer on port {published}"
    );
    // Task to task, over the bridge.
    let url = format!("http://{}:8080/", addresses[1]);
    let fetched = ok(server.shoal(&["exec", "site.1", "--", "wget", "-qO-", &url]));
    assert!(fetched.trim().starts_with("site."), "{fetched}");
    ok(server.shoal(&["delete", "service", "site"]));
    // docker run -p: a host port of one container.
    let host_port = free_port();
    let publish = format!("{host_port}:8080");
    ok(server.shoal(&[
        "run", "-d", "--name", "pub", "-p", &publish, &image, "httpd", "-f", "-p", "8080",
    ]));
    wait("pub answering", 30, || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", host_port)) else {
            return false;
        };
        let _ = s.write_all(b"GET /www/index.html HTTP/1.0\r\n\r\n");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.starts_with("HTTP/1.") && reply.contains(" 200 ")
    });
    wait("pub running", 30, || {
        state(&json(server.shoal(&["get", "task", "pub", "-o", "json"]))) == "running"
    });
    let listed = ok(server.shoal(&["ps"]));
    let line = listed
        .lines()
        .find(|l| l.starts_with("pub "))
        .unwrap_or_else(|| panic!("pub in ps: {listed}"));
    assert!(
        line.contains(&format!("0.0.0.0:{host_port}->8080/tcp")),
        "{line}"
    );
    assert!(line.contains(" 10.231.0."), "{line}");
    ok(server.shoal(&["rm", "--force", "pub"]));
}

fn docker_run_ps_stop_start_rename_and_exec(c: &mut Node) {
    let server = &c.server;
    let agent = &mut c.agent;
    let image = c.image.clone();
    // docker-style: run (attached, with --rm), run -d, ps, stop, rm.
    let out = server.shoal(&[
        "run",
        "--name",
        "once",
        "--rm",
        "-e",
        "WHO=you",
        &image,
        "sh",
        "-c",
        "echo hi $WHO; exit 4",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi you"));
    assert!(
        !server.shoal(&["get", "task", "once"]).status.success(),
        "--rm deleted it"
    );
    assert_eq!(
        ok(server.shoal(&["run", "-d", "--name", "bg", &image, "sleep", "1000"])).trim(),
        "bg"
    );
    wait("bg running", 30, || {
        ok(server.shoal(&["ps"]))
            .lines()
            .any(|l| l.starts_with("bg ") && l.contains("running"))
    });
    refused(server.shoal(&["rm", "bg"]), "stop it first");
    // stop returns once the container has stopped (sleep as PID 1 ignores SIGTERM: it
    // is killed after the grace period), as `docker stop` does.
    let asked = Instant::now();
    ok(server.shoal(&["stop", "-t", "2", "bg"]));
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "waited the grace period"
    );
    assert_eq!(
        state(&json(server.shoal(&["get", "task", "bg", "-o", "json"]))),
        "shutdown",
        "stopped when stop returns"
    );
    assert!(!ok(server.shoal(&["ps"]))
        .lines()
        .any(|l| l.starts_with("bg ")));
    assert!(ok(server.shoal(&["ps", "-a"]))
        .lines()
        .any(|l| l.starts_with("bg ") && l.contains("shutdown")));
    // start: the same container again; rename: a new name, the container carries on.
    let container = |name: &str| {
        let t = json(server.shoal(&["get", "task", name, "-o", "json"]));
        (state(&t).to_string(), t["status"]["containerId"].clone())
    };
    let (_, bg_container) = container("bg");
    ok(server.shoal(&["start", "bg"]));
    wait("bg running again", 30, || container("bg").0 == "running");
    assert_eq!(container("bg").1, bg_container);
    assert_eq!(ok(server.shoal(&["rename", "bg", "bg2"])).trim(), "bg2");
    assert!(!server.shoal(&["get", "task", "bg"]).status.success());
    assert_eq!(container("bg2"), ("running".to_string(), bg_container));
    ok(server.shoal(&["exec", "bg2", "--", "true"]));
    // exec -i forwards stdin; -t gives a terminal; -it both, with the exit code.
    let echoed = ok(server.shoal_stdin(&["exec", "-i", "bg2", "--", "cat"], "hello\n"));
    assert_eq!(echoed, "hello\n");
    let tty = ok(server.shoal(&[
        "exec",
        "-t",
        "bg2",
        "--",
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo terminal",
    ]));
    assert_eq!(tty.trim(), "terminal");
    let session = server.shoal_stdin(
        &["exec", "-it", "bg2", "--", "sh"],
        "echo in-$((40+2)) $TERM\nexit 7\n",
    );
    assert_eq!(session.status.code(), Some(7), "{session:?}");
    assert!(
        String::from_utf8_lossy(&session.stdout).contains("in-42 xterm"),
        "{session:?}"
    );
    refused(
        server.shoal(&["rename", "web.1", "mine"]),
        "belongs to service/web",
    );
    // Nor may a standalone task take a name in a service's slots.
    refused(
        server.shoal(&["rename", "bg2", "web.7"]),
        "are service/web's tasks",
    );
    assert_eq!(container("bg2").0, "running");
    // A stop asked while the agent is away happens once it is back.
    let container = container("bg2").1;
    agent.kill_then_restart(|| {
        ok(server.shoal(&["stop", "--wait=false", "bg2"]));
    });
    wait("bg2 stopped by the new agent", 30, || {
        let id = container.as_str().unwrap_or_default().to_string();
        state(&json(server.shoal(&["get", "task", "bg2", "-o", "json"]))) == "shutdown"
            && !agent.running().contains(&id)
    });
    ok(server.shoal(&["rm", "bg2"]));
}

fn docker_run_container_flags(c: &mut Node) {
    let server = &c.server;
    let agent = &mut c.agent;
    let image = c.image.clone();
    // docker run's container flags: entrypoint and its arguments, workdir, a read-only
    // bind mount, a named volume (kept after the task), a tmpfs with a size; the user.
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("hello"), "from the host\n").expect("write");
    let bind = format!("{}:/data:ro", host.path().display());
    let script = "pwd; cat /data/hello; touch /data/x 2>/dev/null || echo read-only; \
                  echo kept > /vol/f; df -k /scratch | tail -1";
    let flags = [
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "-w",
        "/tmp",
        "-v",
        &bind,
        "-v",
        "keep:/vol",
        "--tmpfs",
        "/scratch:size=1m",
        &image,
        "-c",
        script,
    ];
    let out = ok(server.shoal(&flags));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["/tmp", "from the host", "read-only"], "{out}");
    assert!(
        lines[3].starts_with("tmpfs") && lines[3].contains(" 1024 "),
        "{out}"
    );
    let kept = agent.data.join("volumes/keep/_data/f");
    assert_eq!(
        std::fs::read_to_string(kept).expect("volume file"),
        "kept\n"
    );
    let out = ok(server.shoal(&["run", "--rm", "-u", "1000:1000", &image, "id"]));
    assert!(out.starts_with("uid=1000 gid=1000"), "{out}");
}

fn log_rotation_and_restart_in_place(c: &mut Node) {
    let server = &c.server;
    let agent = &mut c.agent;
    let image = c.image.clone();
    // --log-opt rotates the json-file log; --restart restarts in place.
    let chatty = "for i in $(seq 1 300); do echo line $i; done";
    ok(server.shoal(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        &image,
        "sh",
        "-c",
        chatty,
    ]));
    ok(server.shoal(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        &image,
        "sh",
        "-c",
        "echo attempt; exit 3",
    ]));
    wait("chatty done, flaky given up", 60, || {
        let flaky = json(server.shoal(&["get", "task", "flaky", "-o", "json"]));
        state(&json(
            server.shoal(&["get", "task", "chatty", "-o", "json"]),
        )) == "complete"
            && state(&flaky) == "failed"
    });
    let flaky = json(server.shoal(&["get", "task", "flaky", "-o", "json"]));
    assert_eq!(flaky["status"]["restartCount"], 2, "{flaky}");
    assert_eq!(flaky["status"]["exitCode"], 3, "{flaky}");
    let attempts = ok(server.shoal(&["logs", "task/flaky"]));
    assert_eq!(attempts.matches("attempt").count(), 3, "{attempts}");
    let chatty = json(server.shoal(&["get", "task", "chatty", "-o", "json"]));
    let id = chatty["status"]["containerId"]
        .as_str()
        .expect("container id");
    let mut logs: Vec<String> = std::fs::read_dir(agent.data.join("containers").join(id))
        .expect("container dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("container.log"))
        .collect();
    logs.sort();
    assert_eq!(logs, ["container.log", "container.log.1"]);
    ok(server.shoal(&["rm", "chatty", "flaky"]));
}

/// Deleting a service does not delete its tasks while their containers run: each task
/// stays, shutting down, until its node reports the container gone (busybox httpd as
/// PID 1 ignores SIGTERM, so every container runs out the grace period).
fn a_deleted_service_keeps_its_tasks_until_their_containers_are_gone(c: &mut Node) {
    let server = &c.server;
    let agent = &c.agent;
    let image = c.image.clone();
    apply(
        server,
        &format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: linger}}\nspec:\n  \
             image: {image}\n  replicas: 2\n  command: [httpd, -f, -p, '8080']\n"
        ),
    );
    wait("two running linger tasks", 60, || {
        tasks(server, "linger")
            .iter()
            .filter(|t| state(t) == "running")
            .count()
            == 2
    });
    let ids: Vec<String> = tasks(server, "linger")
        .iter()
        .filter_map(|t| t["status"]["containerId"].as_str().map(str::to_string))
        .collect();
    let asked = Instant::now();
    ok(server.shoal(&["delete", "service", "linger"]));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "delete returns at once"
    );
    let mut shown_shutting_down = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: Vec<String> = agent
            .running()
            .into_iter()
            .filter(|id| ids.contains(id))
            .collect();
        let listed = tasks(server, "linger");
        let claimed: Vec<&str> = listed
            .iter()
            .filter_map(|t| t["status"]["containerId"].as_str())
            .collect();
        for id in &running {
            assert!(
                claimed.contains(&id.as_str()),
                "container {id} runs with no task: {listed:?}"
            );
        }
        if !shown_shutting_down
            && listed
                .iter()
                .any(|t| t["spec"]["desiredState"] == "shutdown")
        {
            let table = ok(server.shoal(&["get", "tasks", "-l", "shoal.dev/service=linger"]));
            shown_shutting_down = table.contains("DESIRED") && table.contains("shutdown");
        }
        if running.is_empty() && listed.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "linger's tasks are never gone: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        shown_shutting_down,
        "`shoal get tasks` showed the tasks shutting down"
    );
}

/// Whatever the scenarios left: deleting it stops and removes every container, mount
/// and file.
fn deleting_everything_removes_every_container_mount_and_file(c: &mut Node) {
    let server = &c.server;
    let agent = &c.agent;
    for kind in ["service", "task"] {
        let names = ok(server.shoal(&["get", kind, "-o", "name"]));
        for name in names.lines().filter(|n| !n.is_empty()) {
            let gone = server.shoal(&["delete", name]);
            assert!(
                gone.status.success() || stderr(&gone).contains("not found"),
                "delete {name}: {}",
                stderr(&gone)
            );
        }
    }
    wait("containers removed", 60, || {
        agent.containers().is_empty()
            && agent.mounts() == 0
            && std::fs::read_dir(agent.data.join("containers")).is_ok_and(|d| d.count() == 0)
    });
}

/// `shoal up`: server and agent in one command, manifests applied, events streamed;
/// SIGTERM stops both.
#[test]
fn shoal_up_runs_a_one_node_cluster() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("cluster");
    let manifest = tmp.path().join("web.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  \
             image: {}\n  command: [sh, -c, 'while true; do sleep 1; done']\n  replicas: 2\n",
            registry.image()
        ),
    )
    .expect("manifest");
    let port = free_port();
    // As the quick start has it: the CLI finds the admin config `shoal up` wrote in
    // ~/.shoal/config (a home of the test's own), with no flags.
    let home = data.join("home");
    std::fs::create_dir_all(&home).expect("home");
    // Whatever happens below, the cluster's containers go at the end.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            remove_containers(&self.0, "shoaltest1");
        }
    }
    let _cleanup = Cleanup(data.join("node"));
    // Killed (and with it, its server and agent) if the test fails half way.
    struct Up(Child);
    impl Drop for Up {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["up", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--agent-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--name", "up-node"])
        .args(["--bridge", "shoaltest1", "--subnet", "10.232.0.0/24"])
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("shoal up"));
    let rx = lines_of(&mut up.0);
    let running = || {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["get", "tasks", "-o", "json"])
            .env("HOME", &home)
            .env_remove("SHOAL_SERVER")
            .env_remove("SHOAL_CONFIG")
            .output()
            .expect("shoal get");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|t| state(t) == "running")
            .count()
    };
    wait("two tasks running under shoal up", 60, || running() == 2);
    // What it printed: the apply, then the events of the cluster as they happen.
    let mut printed = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        printed.push(line);
    }
    let text = printed.join("\n");
    assert!(text.contains("service/web created"), "{text}");
    assert!(
        printed
            .iter()
            .any(|l| l.contains("Normal") && l.to_lowercase().contains("service/web")),
        "an event about the service: {text}"
    );
    let pid = nix::unistd::Pid::from_raw(up.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exited = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = up.0.try_wait() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(up);
    assert!(
        exited.is_some_and(|s| s.success()),
        "shoal up stops on SIGTERM"
    );
    assert!(
        !shoal_testkit::wait_for_port(
            format!("127.0.0.1:{port}").parse().expect("addr"),
            Duration::from_millis(200)
        ),
        "the server stopped with it"
    );
}
