use super::*;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct FakeOps {
    calls: Mutex<Vec<String>>,
    fail_connect: bool,
    fail_move: bool,
}

#[async_trait]
impl NetOps for FakeOps {
    async fn ensure_bridge(&self, _: &str, subnet: Subnet) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("bridge {subnet}"));
        Ok(())
    }
    async fn create_netns(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, "").map_err(|e| e.to_string())?;
        self.calls.lock().unwrap().push("netns".into());
        Ok(())
    }
    async fn connect(
        &self,
        _: &Path,
        _: &str,
        host_if: &str,
        ip: Ipv4Addr,
        _: Subnet,
    ) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("connect {host_if} {ip}"));
        if self.fail_connect {
            return Err("no such device".into());
        }
        Ok(())
    }
    async fn remove_netns(&self, path: &Path) -> Result<(), String> {
        std::fs::remove_file(path).map_err(|e| e.to_string())?;
        self.calls.lock().unwrap().push("remove".into());
        Ok(())
    }
    fn holds_netns(&self, path: &Path) -> bool {
        path.is_file()
    }
    async fn move_netns(&self, from: &Path, to: &Path) -> Result<(), String> {
        self.calls.lock().unwrap().push("move".into());
        if self.fail_move {
            return Err("no such mount".into());
        }
        std::fs::rename(from, to).map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn addresses_are_unique_kept_per_container_and_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subnet: Subnet = "10.9.0.0/29".parse().expect("subnet");
    let net = Network::new(Arc::new(FakeOps::default()), dir.path(), BRIDGE, subnet);
    let a = net.attach("shoal-a").await.expect("a");
    let b = net.attach("shoal-b").await.expect("b");
    assert_eq!(a.ip, Ipv4Addr::new(10, 9, 0, 2), "after the gateway");
    assert_eq!(b.ip, Ipv4Addr::new(10, 9, 0, 3));
    assert_eq!(
        net.attach("shoal-a").await.expect("again").ip,
        a.ip,
        "same container, same address"
    );
    for id in ["c", "d", "e"] {
        net.attach(id).await.expect("room for six");
    }
    assert!(matches!(net.attach("f").await, Err(NetError::Exhausted(_))));
    net.detach("shoal-a").await;
    assert!(!a.netns.exists());
    assert_eq!(net.attach("g").await.expect("freed").ip, a.ip);
}

#[tokio::test]
async fn a_failed_attach_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = Arc::new(FakeOps {
        fail_connect: true,
        ..Default::default()
    });
    let net = Network::new(ops.clone(), dir.path(), BRIDGE, Subnet::default());
    let err = net.attach("shoal-x").await.expect_err("connect fails");
    assert!(err.to_string().contains("no such device"), "{err}");
    assert_eq!(net.address_of("shoal-x"), None);
    let expected = [
        "netns".to_string(),
        format!("connect {} 172.30.0.2", host_if("shoal-x")),
        "remove".to_string(),
    ];
    assert_eq!(*ops.calls.lock().unwrap(), expected);
}

#[test]
fn subnets_parse_strictly() {
    assert_eq!(
        "172.30.0.0/16".parse::<Subnet>().expect("ok"),
        Subnet::default()
    );
    assert!("172.30.0.1/16".parse::<Subnet>().is_err());
    assert!("172.30.0.0/31".parse::<Subnet>().is_err());
    assert!("nonsense".parse::<Subnet>().is_err());
    assert_eq!(host_if("shoal-0123456789abcdef"), "sh6789abcdef");
}

/// A network with a pool of `size` kept filled until the token is cancelled.
async fn pooled(
    ops: Arc<FakeOps>,
    dir: &Path,
    size: usize,
) -> (Network, CancellationToken, tokio::task::JoinHandle<()>) {
    let subnet: Subnet = "10.9.0.0/28".parse().expect("subnet");
    let net = Network::new(ops, dir, BRIDGE, subnet).with_pool(size, dir);
    let stop = CancellationToken::new();
    let filler = tokio::spawn(net.clone().keep_pool_filled(stop.clone()));
    wait_ready(&net, size).await;
    (net, stop, filler)
}

async fn wait_ready(net: &Network, n: usize) {
    let pool = net.pool.as_ref().expect("a pool");
    for _ in 0..500 {
        if pool.ready() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the pool never held {n} (holds {})", pool.ready());
}

fn pool_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("netns-pool"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_task_takes_a_prepared_namespace_with_its_address_and_the_pool_refills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = Arc::new(FakeOps::default());
    let (net, stop, filler) = pooled(ops.clone(), dir.path(), 2).await;
    let prepared = ["10.9.0.2", "10.9.0.3"].map(|ip| ip.parse::<Ipv4Addr>().expect("ip"));
    ops.calls.lock().unwrap().clear();

    let a = net.attach("shoal-a").await.expect("attach");
    assert!(prepared.contains(&a.ip), "a prepared address, got {}", a.ip);
    assert_eq!(a.netns, net.netns_path("shoal-a"));
    assert!(
        a.netns.exists(),
        "the namespace is at the container's place"
    );
    assert_eq!(
        net.address_of("shoal-a"),
        Some(a.ip),
        "the address is the task's"
    );
    assert_eq!(
        ops.calls.lock().unwrap().first().map(String::as_str),
        Some("move"),
        "handed over, not made on the spot"
    );
    wait_ready(&net, 2).await;
    assert_eq!(pool_files(dir.path()).len(), 2, "refilled");

    net.detach("shoal-a").await;
    assert_eq!(net.address_of("shoal-a"), None);
    stop.cancel();
    filler.await.expect("filler");
    assert!(
        pool_files(dir.path()).is_empty(),
        "a stopping agent empties its pool"
    );
    assert!(
        net.owners_starting("pool-").is_empty(),
        "and frees its addresses"
    );
    let b = net.attach("shoal-b").await.expect("without slots");
    assert_eq!(
        b.ip,
        "10.9.0.2".parse::<Ipv4Addr>().expect("ip"),
        "every address free again"
    );
}

#[tokio::test]
async fn a_failed_hand_over_makes_a_namespace_on_the_spot_and_loses_no_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = Arc::new(FakeOps {
        fail_move: true,
        ..Default::default()
    });
    let (net, stop, filler) = pooled(ops.clone(), dir.path(), 1).await;
    let a = net.attach("shoal-a").await.expect("attach");
    assert!(a.netns.exists());
    assert_eq!(net.address_of("shoal-a"), Some(a.ip));
    wait_ready(&net, 1).await;
    stop.cancel();
    filler.await.expect("filler");
    net.detach("shoal-a").await;
    let subnet: Subnet = "10.9.0.0/28".parse().expect("subnet");
    let held = std::fs::read_dir(dir.path().join("network").join("ips"))
        .expect("ips")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(held, 0, "no address of {subnet} stays claimed");
}

#[tokio::test]
async fn a_new_agent_takes_over_the_whole_slots_an_earlier_one_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = Arc::new(FakeOps::default());
    let (net, stop, filler) = pooled(ops.clone(), dir.path(), 3).await;
    // The agent dies: its filler never empties the pool.
    filler.abort();
    let _ = filler.await;
    let left = pool_files(dir.path());
    assert_eq!(left.len(), 3);
    // One slot lost its namespace (a reboot unmounts them all, say).
    std::fs::remove_file(dir.path().join("netns-pool").join(&left[0])).expect("rm");
    ops.calls.lock().unwrap().clear();
    let again = Network::new(ops.clone(), dir.path(), BRIDGE, net.subnet).with_pool(3, dir.path());
    let stop_again = CancellationToken::new();
    let filler = tokio::spawn(again.clone().keep_pool_filled(stop_again.clone()));
    wait_ready(&again, 3).await;
    let now = pool_files(dir.path());
    assert_eq!(now.len(), 3, "three slots: {now:?}");
    assert!(
        now.contains(&left[1]) && now.contains(&left[2]),
        "the whole ones kept: {now:?}"
    );
    let made = ops
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| *c == "netns")
        .count();
    assert_eq!(made, 1, "only the broken one made again");
    assert_eq!(
        again.owners_starting("pool-").len(),
        3,
        "no address held for the lost one"
    );
    stop.cancel();
    stop_again.cancel();
    filler.await.expect("filler");
}
