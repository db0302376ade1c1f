//! [`NetOps`] on the real kernel: rtnetlink for links, addresses and routes; a bind
//! mount of a thread's namespace keeps a container's network namespace alive.
//!
//! Work inside a container's namespace runs on a thread of its own that enters it
//! (`setns`) with its own netlink socket, so no thread of the agent's runtime ever
//! changes namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::TryStreamExt;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::{new_connection, Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::network::{NetOps, Subnet};

pub struct Netlink;

pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

pub(super) fn connection() -> Result<Handle, String> {
    let (conn, handle, _) = new_connection().map_err(|e| format!("netlink: {e}"))?;
    tokio::spawn(conn);
    Ok(handle)
}

pub(super) async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, String> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(format!("looking up {name}: {e}")),
    }
}

pub(super) async fn need_index(handle: &Handle, name: &str) -> Result<u32, String> {
    index_of(handle, name)
        .await?
        .ok_or_else(|| format!("link {name} not found"))
}

pub(super) async fn set(
    handle: &Handle,
    msg: rtnetlink::packet_route::link::LinkMessage,
    what: &str,
) -> Result<(), String> {
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// Runs `f` on a new thread, inside the network namespace at `netns`, with a runtime
/// and netlink connection of its own.
pub(super) async fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let ns = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    on_own_thread(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("entering the namespace: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move { f(connection()?).await })
    })
    .await
}

/// Runs `f` on a thread made for it (which may then change namespace for good), and
/// waits for it without holding up the runtime.
async fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let thread = std::thread::spawn(f);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the namespace thread panicked".to_string())?
}

/// A veth pair: `host_if` up on the bridge `bridge`, its peer (named `<host_if>p`,
/// returned) moved into the namespace at `netns`; both with `mtu` when given.
pub(super) async fn veth_into(
    handle: &Handle,
    netns: &Path,
    host_if: &str,
    bridge: u32,
    mtu: Option<u32>,
) -> Result<String, String> {
    let peer = format!("{host_if}p");
    let mut veth = LinkVeth::new(host_if, &peer);
    if let Some(mtu) = mtu {
        veth = veth.mtu(mtu);
    }
    handle
        .link()
        .add(veth.build())
        .execute()
        .await
        .map_err(|e| format!("creating veth {host_if}: {e}"))?;
    let host = need_index(handle, host_if).await?;
    let peer_index = need_index(handle, &peer).await?;
    move_into(
        handle,
        peer_index,
        netns,
        "moving the peer into the namespace",
    )
    .await?;
    set(
        handle,
        LinkUnspec::new_with_index(host)
            .controller(bridge)
            .up()
            .build(),
        "attaching the host end to the bridge",
    )
    .await?;
    Ok(peer)
}

/// Puts the link `index` of `handle`'s namespace into the namespace at `netns`.
pub(super) async fn move_into(
    handle: &Handle,
    index: u32,
    netns: &Path,
    what: &str,
) -> Result<(), String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    set(
        handle,
        LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_raw_fd())
            .build(),
        what,
    )
    .await
}

/// What a container's end of a veth becomes in its namespace.
pub(super) struct Named {
    pub ifname: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// Inside a namespace: renames the link `peer` as `named` says, brings it up and gives
/// it `ip/prefix`.
pub(super) async fn name_and_address(
    handle: &Handle,
    peer: &str,
    named: &Named,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), String> {
    let eth = need_index(handle, peer).await?;
    let mut msg = LinkUnspec::new_with_index(eth).name(named.ifname.clone());
    if let Some(mac) = named.mac {
        msg = msg.address(mac.to_vec());
    }
    if let Some(mtu) = named.mtu {
        msg = msg.mtu(mtu);
    }
    let ifname = &named.ifname;
    set(handle, msg.build(), &format!("naming {ifname}")).await?;
    set(
        handle,
        LinkUnspec::new_with_index(eth).up().build(),
        &format!("{ifname} up"),
    )
    .await?;
    handle
        .address()
        .add(eth, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(|e| format!("adding {ip}/{prefix} to {ifname}: {e}"))
}

#[async_trait]
impl NetOps for Netlink {
    async fn ensure_bridge(&self, bridge: &str, subnet: Subnet) -> Result<(), String> {
        let handle = connection()?;
        let index = match index_of(&handle, bridge).await? {
            Some(i) => i,
            None => {
                match handle
                    .link()
                    .add(LinkBridge::new(bridge).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(format!("creating {bridge}: {e}")),
                }
                need_index(&handle, bridge).await?
            }
        };
        let gateway = IpAddr::V4(subnet.gateway());
        match handle
            .address()
            .add(index, gateway, subnet.prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(format!("adding {gateway} to {bridge}: {e}")),
        }
        // A MAC of its own, made of the gateway's address as containers' are: a bridge
        // left to itself takes the lowest MAC of its ports, which changes as
        // containers come and go, and every container that cached the old one
        // loses its gateway until its ARP entry goes stale.
        let [a, b, c, d] = subnet.gateway().octets();
        set(
            &handle,
            LinkUnspec::new_with_index(index)
                .address(vec![0x02, 0x42, a, b, c, d])
                .up()
                .build(),
            "bringing the bridge up",
        )
        .await
    }

    async fn create_netns(&self, path: &Path) -> Result<(), String> {
        create_netns(path).await
    }

    async fn connect(
        &self,
        netns: &Path,
        bridge: &str,
        host_if: &str,
        ip: Ipv4Addr,
        subnet: Subnet,
    ) -> Result<(), String> {
        let handle = connection()?;
        // A host end left by a crash half way through goes first.
        if let Some(stale) = index_of(&handle, host_if).await? {
            let _ = handle.link().del(stale).execute().await;
        }
        let bridge = need_index(&handle, bridge).await?;
        let peer = veth_into(&handle, netns, host_if, bridge, None).await?;
        let gateway = subnet.gateway();
        let prefix = subnet.prefix;
        in_netns(netns, move |handle| async move {
            let lo = need_index(&handle, "lo").await?;
            set(
                &handle,
                LinkUnspec::new_with_index(lo).up().build(),
                "lo up",
            )
            .await?;
            let named = Named {
                ifname: "eth0".into(),
                mac: None,
                mtu: None,
            };
            name_and_address(&handle, &peer, &named, ip, prefix).await?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .build();
            handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|e| format!("default route via {gateway}: {e}"))
        })
        .await
    }

    async fn move_netns(&self, from: &Path, to: &Path) -> Result<(), String> {
        std::fs::File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
        // A second bind mount of the same namespace, then the first one goes: the
        // namespace is never without a holder. (MS_MOVE is refused under a shared
        // parent mount, which systemd makes of /.)
        if let Err(e) = mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
            let _ = std::fs::remove_file(to);
            return Err(format!(
                "binding {} at {}: {e}",
                from.display(),
                to.display()
            ));
        }
        self.remove_netns(from).await
    }

    fn holds_netns(&self, path: &Path) -> bool {
        holds_netns(path)
    }

    async fn remove_netns(&self, path: &Path) -> Result<(), String> {
        remove_netns(path)
    }
}

/// A new, empty network namespace, kept alive by a bind mount at `path`.
pub(super) async fn create_netns(path: &Path) -> Result<(), String> {
    let path: PathBuf = path.to_path_buf();
    // A thread of its own: it leaves the agent's namespace for good.
    on_own_thread(move || {
        std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind-mounting the namespace: {e}"))
    })
    .await
}

/// Whether `path` holds a namespace (a bind mount of one, not a plain file).
pub(super) fn holds_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Unmounts and removes the namespace at `path`; one already gone is no error.
pub(super) fn remove_netns(path: &Path) -> Result<(), String> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(format!("unmounting {}: {e}", path.display())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
