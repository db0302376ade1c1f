//! Secrets and Configs end to end, as root, with real runc: `shoal secret|config
//! create` from stdin (a changed, oversized or applied value refused, and so is a
//! reference to one that is not there); a service's containers find them as read-only
//! files on tmpfs (`/run/secrets/NAME`, a target with owner and mode, a config at its
//! path); the value is in no file on the node's or the server's disk, in no log and in
//! no `get` or `describe`; `rm` is refused while a service uses it; `rotate-key` leaves
//! every value readable by the next task; a new value reaches the service by a new name
//! and a rolling update; and the tmpfs goes with the container.

mod support;

use std::path::Path;

use support::node::Node;
use support::*;

/// A value no file could hold by chance.
fn unique_value() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("pw-{}-{nanos:x}", std::process::id())
}

fn vault_service(image: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: vault}}\nspec:\n  \
         image: {image}\n  command: [sh, -c, 'while true; do sleep 1; done']\n  \
         secrets:\n  - {{name: db-pass}}\n  - {{name: db-pass, target: /etc/pw, uid: 1000, gid: 1001, mode: '0400'}}\n  \
         configs: [{{name: app.conf, target: /etc/app.conf}}]\n"
    )
}

/// The running task of service `name`.
fn running_task(server: &Server, name: &str) -> String {
    let mut found = String::new();
    wait(&format!("a running {name} task"), 60, || {
        let t = tasks(server, name)
            .into_iter()
            .find(|t| is_live(t) && state(t) == "running");
        found = t
            .and_then(|t| t["metadata"]["name"].as_str().map(str::to_string))
            .unwrap_or_default();
        !found.is_empty()
    });
    found
}

/// Every regular file under `dir` that holds `needle`, not looking inside mounts (the
/// containers' tmpfs and root filesystems, which are memory or views of files walked
/// anyway).
fn files_holding(dir: &Path, needle: &[u8], mounts: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !mounts.iter().any(|m| Path::new(m) == path) {
                found.extend(files_holding(&path, needle, mounts));
            }
        } else if kind.is_file()
            && std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .collect()
}

fn exec(server: &Server, task: &str, script: &str) -> String {
    ok(server.shoal(&["exec", task, "--", "sh", "-c", script]))
}

/// A value that changes, is too big or comes in a manifest, and a reference to a value
/// that is not there, are each refused with the reason; the CLI's checks skipped, the
/// server refuses the same.
fn refuses_what_it_cannot_keep(node: &Node) {
    let server = &node.server;
    refused(
        server.shoal_stdin(&["secret", "create", "db-pass", "-f", "-"], "other"),
        "secret/db-pass exists, and a value never changes",
    );
    let big = node.tmp.path().join("big");
    std::fs::write(&big, vec![b'x'; 500 * 1024 + 1]).expect("write");
    let big = big.display().to_string();
    refused(
        server.shoal(&["secret", "create", "big", "-f", &big]),
        "500 KiB",
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let raw = rt.block_on(async {
        let mut api = shoal_wire::api_client(&server.url, &server.credentials())
            .await
            .expect("connect");
        api.create_value(shoal_wire::pb::CreateValueRequest {
            kind: "Secret".into(),
            name: "big".into(),
            labels: Default::default(),
            data: vec![b'x'; 500 * 1024 + 1],
        })
        .await
    });
    let status = raw.expect_err("the server refuses it too");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("500 KiB"), "{status:?}");
    refused(
        server.shoal_stdin(
            &["apply", "-f", "-"],
            "apiVersion: shoal.dev/v1\nkind: Secret\nmetadata: {name: in-git}\n",
        ),
        "Secret objects are made with `shoal secret create NAME -f FILE`",
    );
    let naming = |refs: &str| {
        format!(
            "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: lost}}\nspec:\n  \
             image: {}\n  {refs}\n",
            node.image
        )
    };
    refused(
        server.shoal_stdin(&["apply", "-f", "-"], &naming("secrets: [{name: nope}]")),
        "spec.secrets[0].name: secret \"nope\" does not exist",
    );
    refused(
        server.shoal_stdin(
            &["apply", "-f", "-"],
            &naming("secrets: [{name: db-pass, mode: 0400}]"),
        ),
        "spec.secrets[0].mode",
    );
    assert!(
        !ok(server.shoal(&["get", "services", "-o", "name"])).contains("lost"),
        "nothing applied"
    );
}

#[test]
fn secrets_and_configs_reach_their_containers_and_nowhere_else() {
    let node = Node::start("shoaltest5", "10.235.0.0/24");
    let server = &node.server;
    let value = unique_value();
    assert_eq!(
        ok(server.shoal_stdin(&["secret", "create", "db-pass", "-f", "-"], &value)),
        "secret/db-pass created\n"
    );
    ok(server.shoal_stdin(
        &["config", "create", "app.conf", "-f", "-"],
        "listen 8080\n",
    ));
    refuses_what_it_cannot_keep(&node);
    apply(server, &vault_service(&node.image));
    let task = running_task(server, "vault");

    // Where the references say, as the references say.
    assert_eq!(exec(server, &task, "cat /run/secrets/db-pass"), value);
    assert_eq!(
        exec(server, &task, "stat -c '%a %u %g' /etc/pw"),
        "400 1000 1001\n"
    );
    assert_eq!(
        exec(server, &task, "stat -c '%a %u %g' /run/secrets/db-pass"),
        "444 0 0\n"
    );
    assert_eq!(exec(server, &task, "cat /etc/app.conf"), "listen 8080\n");
    let mounts = exec(
        server,
        &task,
        "grep -E ' (/run/secrets/db-pass|/etc/pw|/etc/app.conf) ' /proc/mounts",
    );
    assert_eq!(mounts.lines().count(), 3, "{mounts}");
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.get(2), Some(&"tmpfs"), "on tmpfs: {line}");
        assert!(
            fields
                .get(3)
                .is_some_and(|o| o.split(',').any(|o| o == "ro")),
            "read-only: {line}"
        );
    }
    let write = server.shoal(&[
        "exec",
        &task,
        "--",
        "sh",
        "-c",
        "echo x > /run/secrets/db-pass",
    ]);
    assert!(!write.status.success(), "a secret cannot be written to");

    // Nowhere else: not in what get and describe print, not on disk, not in logs.
    let printed = [
        ok(server.shoal(&["get", "secret", "db-pass", "-o", "yaml"])),
        ok(server.shoal(&["get", "secrets", "-o", "json"])),
        ok(server.shoal(&["describe", "secret", "db-pass"])),
        ok(server.shoal(&["secret", "ls"])),
        ok(server.shoal(&["get", "task", &task, "-o", "yaml"])),
        ok(server.shoal(&["describe", "service", "vault"])),
        ok(server.shoal(&["logs", "service/vault"])),
    ];
    for out in &printed {
        assert!(!out.contains(&value), "printed: {out}");
    }
    assert!(
        printed[0].contains("digest: hmac-sha256:"),
        "{}",
        printed[0]
    );
    let mounts = mount_points();
    for dir in [&node.agent.data, &server.data_dir] {
        let holding = files_holding(dir, value.as_bytes(), &mounts);
        assert!(holding.is_empty(), "the value is on disk in {holding:?}");
    }
    for log in [node.agent.log(), server.log()] {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.is_empty(), "{} is written", log.display());
        assert!(!text.contains(&value), "the value is in {}", log.display());
    }

    // In use: rm says by what. A new value key: the next task still reads it.
    refused(
        server.shoal(&["secret", "rm", "db-pass"]),
        "in use by service/vault",
    );
    refused(
        server.shoal(&["config", "rm", "app.conf"]),
        "in use by service/vault",
    );
    let rotated = ok(server.shoal(&["secret", "rotate-key"]));
    assert!(
        rotated.contains("value key 2 in use; 2 data keys sealed again; keys dropped: 1"),
        "{rotated}"
    );
    let old_container =
        json(server.shoal(&["get", "task", &task, "-o", "json"]))["status"]["containerId"].clone();
    node.agent
        .runc(&["kill", old_container.as_str().unwrap_or_default(), "KILL"]);
    wait("the vault task replaced", 60, || {
        tasks(server, "vault").iter().any(|t| {
            is_live(t) && state(t) == "running" && t["status"]["containerId"] != old_container
        })
    });
    let task = running_task(server, "vault");
    assert_eq!(exec(server, &task, "cat /run/secrets/db-pass"), value);

    // A new value is a new name and a rolling update, at the same path.
    let value2 = unique_value();
    ok(server.shoal_stdin(&["secret", "create", "db-pass-2", "-f", "-"], &value2));
    let rolled = vault_service(&node.image).replace(
        "  - {name: db-pass}\n",
        "  - {name: db-pass-2, target: db-pass}\n",
    );
    assert_ne!(rolled, vault_service(&node.image));
    apply(server, &rolled);
    let mut now = String::new();
    wait("the rolled task reads the new value", 60, || {
        now = running_task(server, "vault");
        server
            .shoal(&["exec", &now, "--", "cat", "/run/secrets/db-pass"])
            .stdout
            == value2.as_bytes()
    });
    assert_eq!(
        exec(server, &now, "cat /etc/pw"),
        value,
        "the other reference stays"
    );

    // Gone with the service: its tmpfs unmounted, then the secret can go.
    ok(server.shoal(&["delete", "service", "vault"]));
    wait("the vault's containers and mounts gone", 60, || {
        node.agent.containers().is_empty() && node.agent.mounts() == 0
    });
    assert_eq!(
        ok(server.shoal(&["secret", "rm", "db-pass", "db-pass-2"])),
        "secret/db-pass deleted\nsecret/db-pass-2 deleted\n"
    );
    ok(server.shoal(&["config", "rm", "app.conf"]));
    let holding = files_holding(&server.data_dir, value.as_bytes(), &mount_points());
    assert!(holding.is_empty(), "{holding:?}");
}
