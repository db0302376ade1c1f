//! History is compacted: with `--history-retention 1s`, 3,000 applies of one 1.3 KB
//! object (the probe grew the embedded file from 1.26 MB to 25 MB with them) leave a
//! store file under 8 MiB, and a watch resuming from revision 1 gets the relist signal
//! (OUT_OF_RANGE) instead of a replay of everything, on both stores.

mod support;

use std::time::{Duration, Instant};

use shoal_wire::pb;
use support::*;

type Client = pb::api_client::ApiClient<tonic::transport::Channel>;

const APPLIES: usize = 3000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One 1.3 KB Network, its annotation naming apply `i`.
fn network(i: usize) -> pb::Manifest {
    let padding = "x".repeat(1100);
    pb::Manifest {
        json: format!(
            r#"{{"apiVersion":"shoal.dev/v1","kind":"Network","metadata":{{"name":"churn","annotations":{{"apply":"{i}","padding":"{padding}"}}}},"spec":{{"subnet":"10.30.0.0/24"}}}}"#
        ),
        source: format!("apply {i}"),
    }
}

/// The applies, one after another, as one user (or a GitSync) would.
async fn churn(client: &mut Client) {
    for i in 0..APPLIES {
        client
            .apply(pb::ApplyRequest {
                manifests: vec![network(i)],
                dry_run: false,
            })
            .await
            .unwrap_or_else(|s| panic!("apply {i}: {s}"));
    }
}

/// What a watch resuming after `revision` gets first: an error code, or an event.
async fn resume_after(client: &mut Client, revision: i64) -> Result<String, tonic::Code> {
    let request = pb::WatchRequest {
        kind: "Network".into(),
        resource_version: revision,
        ..Default::default()
    };
    let mut stream = client
        .watch(request)
        .await
        .map_err(|s| s.code())?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Ok(Some(msg))) => Ok(msg.r#type),
        Ok(Ok(None)) => Ok("end of stream".into()),
        Ok(Err(s)) => Err(s.code()),
        Err(_) => Ok("nothing in 5 s".into()),
    }
}

/// Applies, then waits for the compactor: a resume from revision 1 must turn into
/// the relist signal within a few retention periods.
fn history_is_compacted(server: &Server) {
    runtime().block_on(async {
        let mut client = shoal_wire::api_client(&server.url, &server.credentials())
            .await
            .expect("connect");
        let started = Instant::now();
        churn(&mut client).await;
        eprintln!(
            "{APPLIES} applies in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match resume_after(&mut client, 1).await {
                Err(tonic::Code::OutOfRange) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "history from revision 1 is still there 20 s after the churn: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // A watch resuming from a recent revision still resumes.
        let last = client
            .apply(pb::ApplyRequest {
                manifests: vec![network(APPLIES)],
                dry_run: false,
            })
            .await
            .expect("apply")
            .into_inner();
        let stored: serde_json::Value = serde_json::from_str(&last.results[0].json).expect("json");
        let rv: i64 = stored["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("resourceVersion");
        assert_eq!(
            resume_after(&mut client, rv - 1).await,
            Ok("MODIFIED".to_string()),
            "a watch from just before the last apply resumes"
        );
    });
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn history_is_compacted_and_the_file_stays_small_embedded() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded_with(data.path(), &["--history-retention", "1s"]);
    history_is_compacted(&server);
    let file = data.path().join("store.redb");
    // Compacted history frees pages that later writes reuse, so the file stays small
    // (giving space back to the file system is server/store/tests/file_compaction.rs).
    let bound = 8 << 20;
    let small = shoal_testkit::eventually(Duration::from_secs(20), || {
        (file_size(&file) < bound).then_some(())
    });
    assert!(
        small.is_some(),
        "store.redb is {} bytes after {APPLIES} applies and compaction; expected under {bound}",
        file_size(&file)
    );
    eprintln!("store.redb after compaction: {} bytes", file_size(&file));
    // Still whole: the last apply is what is stored.
    let n = json(server.shoal(&["get", "network", "churn", "-o", "json"]));
    assert_eq!(n["metadata"]["annotations"]["apply"], APPLIES.to_string());
}

#[test]
fn history_is_compacted_on_etcd() {
    let etcd = shoal_testkit::Etcd::start();
    let server = Server::etcd_with(&etcd.address(), "compact", &["--history-retention", "1s"]);
    history_is_compacted(&server);
}

/// A server that never lives as long as the retention still compacts: the compactor's
/// mark is in the store, so each restart carries on from it instead of starting over.
/// Each server here lives ~1 s with a 3 s retention; before the mark was kept, none of
/// them ever compacted.
#[test]
fn history_is_compacted_across_restarts_faster_than_the_retention() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = Server::embedded_with(data.path(), &["--history-retention", "3s"]);
    let rt = runtime();
    let started = Instant::now();
    let mut compacted = false;
    for round in 0..12 {
        rt.block_on(async {
            let mut client = shoal_wire::api_client(&server.url, &server.credentials())
                .await
                .expect("connect");
            client
                .apply(pb::ApplyRequest {
                    manifests: vec![network(round)],
                    dry_run: false,
                })
                .await
                .expect("apply");
            std::thread::sleep(Duration::from_millis(800));
            compacted = resume_after(&mut client, 1).await == Err(tonic::Code::OutOfRange);
        });
        if compacted {
            break;
        }
        server.crash_and_restart();
    }
    assert!(
        compacted,
        "history from revision 1 is still there after {:.0} s of servers restarted every second with a 3 s retention",
        started.elapsed().as_secs_f64()
    );
}
