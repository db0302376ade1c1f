//! GitOps benchmark on etcd, against `git http-backend` under lighttpd on loopback:
//! commit-to-applied latency through the webhook and through polling, and the time to
//! sync a repository of 1,000 manifests. Baselines from the same run: a raw `git fetch`
//! of one commit and a raw `git clone` of the 1,000-manifest repository (the git CLI
//! against the same server), and `shoal apply` of the same 1,000 manifests.
//!
//! Run through `hack/bench-gitops.sh`, which starts etcd.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use hmac::{Hmac, Mac};
use shoal_testkit::git::{GitRepo, GitServer};
use shoal_wire::pb::{self, api_client::ApiClient};
use support::{apply, connect_when_up, start_server};
use tonic::transport::Channel;

const SAMPLES: usize = 10;
const POLL_INTERVAL_S: u64 = 2;
const BULK: usize = 1000;
const SECRET: &str = "bench-secret-0123456789abcdef";

fn service(name: &str, image: &str) -> String {
    format!("apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{image: \"{image}\", replicas: 0}}\n")
}

fn gitsync(name: &str, url: &str, path: &str, interval: &str) -> String {
    format!("apiVersion: shoal.dev/v1\nkind: GitSync\nmetadata: {{name: {name}}}\nspec: {{url: \"{url}\", ref: main, path: {path}, interval: {interval}}}\n")
}

async fn get(client: &mut ApiClient<Channel>, kind: &str, name: &str) -> Option<serde_json::Value> {
    let r = client
        .get(pb::GetRequest {
            kind: kind.into(),
            name: name.into(),
        })
        .await
        .ok()?;
    serde_json::from_str(&r.into_inner().json).ok()
}

/// Polls every 5 ms until `f` holds for the object; returns when it did.
async fn until(
    client: &mut ApiClient<Channel>,
    kind: &str,
    name: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(obj) = get(client, kind, name).await {
            if f(&obj) {
                return Instant::now();
            }
        }
        assert!(Instant::now() < deadline, "{kind}/{name} never got there");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The webhook call a git host makes on push: a signed POST over HTTP/1.1.
fn call_webhook(port: u16, name: &str) {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!(
        "POST /hooks/gitsync/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Hub-Signature-256: sha256={sig}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("write");
    conn.write_all(body).expect("write");
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 202"), "webhook: {resp}");
}

/// Milliseconds from each of `SAMPLES` pushed commits to the service `name` (in the
/// folder `name/`) carrying the commit's image, synced by a GitSync `name` polling every
/// `interval`, and told by the webhook on `webhook_port` when given.
async fn commit_to_applied(
    client: &mut ApiClient<Channel>,
    repo: &GitRepo,
    url: &str,
    name: &str,
    interval: &str,
    webhook_port: Option<u16>,
) -> Vec<f64> {
    apply(client, &gitsync(name, url, name, interval)).await;
    until(client, "GitSync", name, |o| {
        o["status"]["lastAppliedRevision"].is_string()
    })
    .await;
    let mut samples = Vec::new();
    for i in 1..=SAMPLES {
        if webhook_port.is_none() {
            // Commits land at varying points of the interval, as real pushes do.
            let offset = (i as u64 * 733) % (POLL_INTERVAL_S * 1000);
            tokio::time::sleep(Duration::from_millis(offset)).await;
        }
        let image = format!("bench:{i}");
        repo.write(&format!("{name}/web.yaml"), &service(name, &image));
        repo.commit(name);
        let t0 = Instant::now();
        if let Some(port) = webhook_port {
            call_webhook(port, name);
        }
        let done = until(client, "Service", name, |o| {
            o["spec"]["image"] == image.as_str()
        })
        .await;
        samples.push((done - t0).as_secs_f64() * 1000.0);
    }
    samples
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git")
        .status
        .success();
    assert!(ok, "git {args:?}");
}

#[tokio::main]
async fn main() {
    let mut etcd = "http://127.0.0.1:2379".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--etcd", Some(v)) => etcd = v,
            _ => panic!("usage: bench-gitops --etcd URL"),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = GitRepo::new(&dir.path().join("git"));
    repo.write("hooked/web.yaml", &service("hooked", "bench:0"));
    repo.write("polled/web.yaml", &service("polled", "bench:0"));
    for i in 0..BULK {
        repo.write(
            &format!("bulk/svc-{i:04}.yaml"),
            &service(&format!("bulk-{i:04}"), "bench:1"),
        );
    }
    repo.commit("start");
    let http = GitServer::http(&repo);

    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let store = format!("etcd://{}", etcd.trim_start_matches("http://"));
    let secret_arg = secret.display().to_string();
    // Plaintext on loopback: the webhook is called over raw HTTP/1.1 below, and what
    // is measured is the sync, not the transport.
    let server = start_server(
        &dir.path().join("server"),
        &[
            "--insecure",
            "--store",
            &store,
            "--webhook-secret-file",
            &secret_arg,
        ],
    );
    let port: u16 = server
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut client = connect_when_up(&server).await;

    eprintln!("baseline: git clone and git fetch with the git CLI");
    let t0 = Instant::now();
    git(
        dir.path(),
        &["clone", "-q", "--bare", &http.url, "raw-clone.git"],
    );
    let git_clone_s = t0.elapsed().as_secs_f64();
    let raw = dir.path().join("raw-clone.git");
    let mut fetches = Vec::new();
    for i in 0..SAMPLES {
        repo.write("scratch.txt", &format!("{i}\n"));
        repo.commit("scratch");
        let t0 = Instant::now();
        git(
            &raw,
            &["fetch", "-q", "origin", "+refs/heads/main:refs/heads/main"],
        );
        fetches.push(t0.elapsed().as_secs_f64() * 1000.0);
    }

    eprintln!("baseline: shoal apply of {BULK} manifests");
    let all: String = (0..BULK)
        .map(|i| service(&format!("raw-{i:04}"), "bench:1"))
        .collect::<Vec<_>>()
        .join("---\n");
    let t0 = Instant::now();
    apply(&mut client, &all).await;
    let apply_s = t0.elapsed().as_secs_f64();

    eprintln!("sync of {BULK} manifests");
    let t0 = Instant::now();
    apply(&mut client, &gitsync("bulk", &http.url, "bulk", "1h")).await;
    // The baseline's scratch commits moved main on: any applied revision is the last.
    let done = until(&mut client, "GitSync", "bulk", |o| {
        o["status"]["lastAppliedRevision"].is_string()
    })
    .await;
    let sync_s = (done - t0).as_secs_f64();
    let inventory = get(&mut client, "GitSync", "bulk").await.expect("bulk")["status"]["inventory"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(inventory, BULK, "every manifest applied");

    eprintln!("commit to applied through the webhook, {SAMPLES} commits");
    let mut hooked =
        commit_to_applied(&mut client, &repo, &http.url, "hooked", "1h", Some(port)).await;
    eprintln!("commit to applied by polling every {POLL_INTERVAL_S}s, {SAMPLES} commits");
    let interval = format!("{POLL_INTERVAL_S}s");
    let mut polled =
        commit_to_applied(&mut client, &repo, &http.url, "polled", &interval, None).await;

    println!("git_clone_1000_manifests_s: {git_clone_s:.2} s");
    println!("git_fetch_p50_ms: {:.0} ms", percentile(&mut fetches, 0.5));
    println!("apply_1000_manifests_s: {apply_s:.2} s");
    println!("sync_1000_manifests_s: {sync_s:.2} s");
    println!(
        "commit_to_applied_webhook_ms: {:.0} ms",
        percentile(&mut hooked, 0.5)
    );
    println!(
        "commit_to_applied_webhook_p99_ms: {:.0} ms",
        percentile(&mut hooked, 0.99)
    );
    println!("poll_interval_s: {POLL_INTERVAL_S} s");
    println!(
        "commit_to_applied_poll_ms: {:.0} ms",
        percentile(&mut polled, 0.5)
    );
    println!(
        "commit_to_applied_poll_p99_ms: {:.0} ms",
        percentile(&mut polled, 0.99)
    );
}
