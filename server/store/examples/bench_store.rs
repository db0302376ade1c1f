//! Store benchmark: writes/s and watch-delivery latency for both backends, with raw
//! etcd puts (etcd-client, same concurrency, no compare) as the baseline.
//!
//! Usage: bench-store --etcd http://127.0.0.1:2379 [--writes N] [--concurrency C]
//! Prints `name: value unit` lines last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_store::{EmbeddedStore, EtcdStore, Store};

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
    let l_etcd = watch_latency_p99_ms(etcd, &format!("{run}l/"), 1000).await;

    println!("etcd_raw_puts_per_s: {raw:.0} writes/s");
    println!("store_writes_per_s.embedded: {w_emb:.0} writes/s");
    println!("store_writes_per_s.etcd: {w_etcd:.0} writes/s");
    println!("watch_latency_p99_ms.embedded: {l_emb:.2} ms");
    println!("watch_latency_p99_ms.etcd: {l_etcd:.2} ms");
}
