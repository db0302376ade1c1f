//! Store benchmark: writes/s and watch-delivery latency for both backends, with raw
//! etcd puts (etcd-client, same concurrency, no compare) as the baseline; and the
//! store's size after 10,000 applies of one 1.3 KB object, before compaction (the
//! baseline) and after it.
//!
//! Usage: bench-store --etcd http://127.0.0.1:2379 [--writes N] [--concurrency C]
//! Prints `name: value unit` lines last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_store::{EmbeddedStore, EtcdStore, ObjectStore, Store};

struct Args {
    etcd: String,
    writes: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        etcd: "http://127.0.0.1:2379".into(),
        writes: 20_000,
        concurrency: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--etcd" => a.etcd = value,
            "--writes" => a.writes = value.parse().expect("--writes: a number"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

async fn store_writes(
    store: Arc<dyn Store>,
    prefix: &str,
    writes: usize,
    concurrency: usize,
) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let store = store.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < writes {
                store
                    .create(&format!("{prefix}{i:08}"), vec![b'x'; 256], None)
                    .await
                    .expect("create");
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    writes as f64 / start.elapsed().as_secs_f64()
}

async fn raw_etcd_puts(endpoint: &str, writes: usize, concurrency: usize) -> f64 {
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("etcd");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < writes {
                client
                    .put(format!("/bench-raw/{i:08}"), vec![b'x'; 256], None)
                    .await
                    .expect("put");
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    writes as f64 / start.elapsed().as_secs_f64()
}

/// Writes one key at a time and measures how long until the watcher sees it.
async fn watch_latency_p99_ms(store: Arc<dyn Store>, prefix: &str, samples: usize) -> f64 {
    let mut watch = store.watch(prefix, 0).await.expect("watch");
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let sent = Instant::now();
        store
            .create(&format!("{prefix}{i:08}"), vec![], None)
            .await
            .expect("create");
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("event");
        assert!(ev.kv.key.ends_with(&format!("{i:08}")));
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

const CHURN: usize = 10_000;

/// Applies one 1.3 KB Network `CHURN` times, each with a new annotation.
async fn churn(store: Arc<dyn Store>) {
    let objects = ObjectStore::new(store);
    let padding = "x".repeat(1100);
    for i in 0..CHURN {
        let obj: shoal_api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1", "kind": "Network",
            "metadata": {"name": "churn", "annotations": {"apply": i.to_string(), "padding": padding}},
            "spec": {"subnet": "10.30.0.0/24"},
        }))
        .expect("object");
        objects.apply(obj, false).await.expect("apply");
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The embedded file after the churn, and after compacting all history (the writer
/// gives free pages back a moment after it answers).
async fn embedded_churn_mib(dir: &std::path::Path) -> (f64, f64) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir).expect("embedded"));
    churn(store.clone()).await;
    let file = dir.join("store.redb");
    let len = || std::fs::metadata(&file).map_or(0, |m| m.len());
    let before = len();
    store
        .compact(store.revision().await.expect("revision"))
        .await
        .expect("compact");
    let mut after = len();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if len() == after && after < before {
            break;
        }
        after = len();
    }
    (mib(before), mib(after))
}

/// The growth of etcd's database in use over the churn, and what is left of it after
/// compacting all history: the keys earlier figures wrote stay, so both are measured
/// against the database as it was, compacted, before the churn.
async fn etcd_churn_mib(store: Arc<dyn Store>, endpoint: &str) -> (f64, f64) {
    let mut client = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("etcd");
    let compact_all = || async {
        store
            .compact(store.revision().await.expect("revision"))
            .await
            .expect("compact");
        // etcd frees the compacted revisions in the background.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    compact_all().await;
    let baseline = etcd_in_use_mib(&mut client).await;
    churn(store.clone()).await;
    let before = etcd_in_use_mib(&mut client).await - baseline;
    compact_all().await;
    let after = etcd_in_use_mib(&mut client).await - baseline;
    (before, after.max(0.0))
}

async fn etcd_in_use_mib(client: &mut etcd_client::Client) -> f64 {
    let status = client.status().await.expect("status");
    mib(status.raft_used_db_size().max(0) as u64)
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("embedded"));
    let etcd: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&a.etcd))
            .await
            .expect("etcd"),
    );
    let run = format!("/bench/{}/", std::process::id());

    eprintln!(
        "raw etcd puts: {} writes, {} concurrent",
        a.writes, a.concurrency
    );
    let raw = raw_etcd_puts(&a.etcd, a.writes, a.concurrency).await;
    eprintln!("store writes (embedded)");
    let w_emb = store_writes(
        embedded.clone(),
        &format!("{run}w/"),
        a.writes,
        a.concurrency,
    )
    .await;
    eprintln!("store writes (etcd)");
    let w_etcd = store_writes(etcd.clone(), &format!("{run}w/"), a.writes, a.concurrency).await;
    eprintln!("watch latency");
    let l_emb = watch_latency_p99_ms(embedded, &format!("{run}l/"), 1000).await;
    let l_etcd = watch_latency_p99_ms(etcd.clone(), &format!("{run}l/"), 1000).await;
    eprintln!("{CHURN} applies of one object");
    let churn_dir = tempfile::tempdir().expect("tempdir");
    let (emb_before, emb_after) = embedded_churn_mib(churn_dir.path()).await;
    let (etcd_before, etcd_after) = etcd_churn_mib(etcd, &a.etcd).await;

    println!("etcd_raw_puts_per_s: {raw:.0} writes/s");
    println!("store_writes_per_s.embedded: {w_emb:.0} writes/s");
    println!("store_writes_per_s.etcd: {w_etcd:.0} writes/s");
    println!("watch_latency_p99_ms.embedded: {l_emb:.2} ms");
    println!("watch_latency_p99_ms.etcd: {l_etcd:.2} ms");
    println!("store_size_after_10k_applies_mib.embedded: {emb_before:.1} MiB");
    println!("store_size_after_10k_applies_compacted_mib.embedded: {emb_after:.2} MiB");
    println!("store_size_after_10k_applies_mib.etcd: {etcd_before:.1} MiB grown");
    println!("store_size_after_10k_applies_compacted_mib.etcd: {etcd_after:.2} MiB grown");
}
