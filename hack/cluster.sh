#!/usr/bin/env bash
# A multi-host shoal cluster on this machine, as root: N hosts as network namespaces.
#
#   hack/cluster.sh up N [--prefix P] [--import TAR=REF].. [--mtu M]
#   hack/cluster.sh down [--prefix P]
#   hack/cluster.sh restart-agent HOST [--prefix P]
#
# `up` makes namespaces P0..P(N-1) (default prefix shoal-h), each with a veth to the
# shared bridge P-br and its own address (NET.1, NET.2, ..; NET from SHOAL_CLUSTER_NET,
# default 10.213.0) and MTU, runs `shoal server` in the root namespace on NET.254 and
# one `shoal agent` named like its namespace in each, with its own data directory,
# the test image as local/busybox:1 and each --import archive as REF; the containers'
# DNS forwards names it does not know to NET.254:53 (nothing, unless you serve
# something there: tests never reach a resolver they did not start). The agents join
# with a worker token and everything speaks mutual TLS. It waits until every node is
# ready and prints `SHOAL_SERVER=URL SHOAL_CONFIG=FILE` (the admin's client config)
# as its last line: `export` it. `down` removes
# every namespace, link, mount and process `up` made (the logs stay in DIR.last).
# `restart-agent` kills one host's
# agent with SIGKILL and starts it again as `up` did (its containers keep running).
#
# Binaries: SHOAL_BIN (default: a release build, made if missing). State and logs:
# SHOAL_CLUSTER_DIR (default /tmp/shoal-cluster-P). More `shoal server` arguments:
# SHOAL_SERVER_ARGS (e.g. "--heartbeat-period 1s").
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

usage() { echo "usage: hack/cluster.sh up N [--prefix P] [--import TAR=REF].. [--mtu M] | down [--prefix P] | restart-agent HOST [--prefix P]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "hack/cluster.sh makes namespaces and runs containers: run it as root" >&2; exit 1; }

cmd=${1:-}; shift || true
n=0
target=
if [ "$cmd" = up ]; then
    n=${1:-}; shift || true
    [[ "$n" =~ ^[1-9][0-9]?$ ]] || { echo "up: N must be a number of hosts (1-99), not '$n'" >&2; usage; }
elif [ "$cmd" = restart-agent ]; then
    target=${1:-}; shift || true
    [ -n "$target" ] || usage
fi
prefix=shoal-h
imports=()
mtu=1500
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
        --import) [[ "${2:-}" == *=* ]] || { echo "--import wants TAR=REF, not '${2:-}'" >&2; exit 2; }
                  imports+=("$2"); shift 2 ;;
        --mtu) mtu=${2:?--mtu needs a value}; shift 2 ;;
        *) echo "unknown argument '$1'" >&2; usage ;;
    esac
done
[[ "$prefix" =~ ^[a-z][a-z0-9-]{0,8}$ ]] || { echo "--prefix '$prefix': 1-9 of a-z, 0-9, '-' (it names links of at most 15 bytes)" >&2; exit 2; }
net=${SHOAL_CLUSTER_NET:-10.213.0}
dir=${SHOAL_CLUSTER_DIR:-/tmp/shoal-cluster-$prefix}
bridge="$prefix-br"
server_url="https://$net.254:7443"
# The admin's client config the server writes.
config="$dir/server/admin.yaml"

down() {
    local pids
    for f in "$dir"/*.pid; do
        [ -e "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
    done
    sleep 0.3
    # Containers outlive their agent by design: remove them through the runtime.
    for root in "$dir"/*/runtime; do
        [ -d "$root" ] || continue
        for id in $(runc --root "$root" list -q 2>/dev/null); do
            runc --root "$root" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$prefix[0-9]+$" || true); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    for f in "$dir"/*.pid; do
        [ -e "$f" ] || continue
        kill -9 "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    # Namespace and rootfs mounts the agents made, deepest first.
    if [ -d "$dir" ]; then
        findmnt -rn -o TARGET | { grep -F "$dir/" || true; } | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    fi
    # A host's uplink goes with its namespace, unless something still holds the
    # namespace open: remove it by name too.
    for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^$prefix[0-9]+u$" || true); do
        ip link del "$link" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    # The processes' logs outlive the cluster in $dir.last, for whoever looks into a
    # failure after a test took the cluster down.
    if [ -d "$dir" ]; then
        rm -rf "$dir.last" && mkdir -p "$dir.last" && cp "$dir"/*.log "$dir.last/" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

if [ "$cmd" = down ]; then
    down
    exit 0
fi
[ "$cmd" = up ] || [ "$cmd" = restart-agent ] || usage

if [ -n "${SHOAL_BIN:-}" ]; then
    shoal=$SHOAL_BIN
else
    [ "$cmd" = restart-agent ] || { ensure_packages; build_release; }
    shoal=$PWD/target/release/shoal
fi
[ -x "$shoal" ] || { echo "SHOAL_BIN=$shoal is not an executable" >&2; exit 1; }

# Starts host number $1's agent in its namespace, in the background.
start_agent() {
    local host="$prefix$1" data="$dir/$prefix$1"
    # nsenter, not `ip netns exec`: the agent keeps the root mount namespace (and
    # with it /sys/fs/cgroup, which runc needs).
    SHOAL_JOIN_TOKEN=$(cat "$dir/token") nsenter --net="/run/netns/$host" "$shoal" agent \
        --join "$server_url" --name "$host" \
        --data-dir "$data" --listen "$net.$(($1 + 1)):7444" \
        --dns-upstream "$net.254:53" \
        >>"$dir/$host.log" 2>&1 &
    echo $! >"$dir/$host.pid"
}

if [ "$cmd" = restart-agent ]; then
    i=${target#"$prefix"}
    [[ "$i" =~ ^[0-9]+$ ]] && [ -e "$dir/$target.pid" ] || { echo "restart-agent: no host '$target' in cluster '$prefix'" >&2; exit 1; }
    old=$(cat "$dir/$target.pid")
    kill -9 "$old" 2>/dev/null || true
    # SIGKILL is delivered, not done: until the old agent has exited it still holds
    # its node API port, and the new one would fail to bind it (as systemd waits).
    for _ in $(seq 100); do
        [ -e "/proc/$old" ] && ! grep -q '^State:.*Z' "/proc/$old/status" 2>/dev/null || break
        sleep 0.05
    done
    start_agent "$i"
    # Say at once if the new agent did not come up, rather than leave a node to die.
    new=$(cat "$dir/$target.pid")
    for _ in $(seq 200); do
        [ -e "/proc/$new" ] || { echo "restart-agent: the new agent of $target exited:" >&2; tail -5 "$dir/$target.log" >&2; exit 1; }
        nsenter --net="/run/netns/$target" bash -c "echo >/dev/tcp/$net.$((i + 1))/7444" 2>/dev/null && exit 0
        sleep 0.05
    done
    echo "restart-agent: the new agent of $target does not serve $net.$((i + 1)):7444 after 10 s" >&2
    exit 1
fi
ensure_packages

# Whatever a failed up made is removed again.
trap 'echo "hack/cluster.sh: up failed; cleaning up (logs kept in $dir.failed)" >&2; mkdir -p "$dir.failed"; cp "$dir"/*.log "$dir.failed/" 2>/dev/null || true; down' ERR
down
mkdir -p "$dir"

ip link add "$bridge" type bridge
ip addr add "$net.254/24" dev "$bridge"
ip link set "$bridge" mtu "$mtu" up

# Its home is the cluster's directory: it leaves the user's ~/.shoal/config alone.
# shellcheck disable=SC2086 # SHOAL_SERVER_ARGS is a list of arguments
HOME=$dir "$shoal" server --data-dir "$dir/server" --listen "$net.254:7443" \
    ${SHOAL_SERVER_ARGS:-} >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
for _ in $(seq 1 200); do
    [ -s "$config" ] && SHOAL_CONFIG=$config "$shoal" --server "$server_url" token create >"$dir/token" 2>/dev/null && break
    sleep 0.1
done
[ -s "$dir/token" ] || { echo "hack/cluster.sh: the server did not start (see $dir/server.log)" >&2; false; }
chmod 600 "$dir/token"

image=$dir/image
hack/build-test-image.sh "$image/layout" >/dev/null
tar -C "$image/layout" -cf "$image/busybox.tar" .

for i in $(seq 0 $((n - 1))); do
    host="$prefix$i"
    ip netns add "$host"
    ip link add "${host}u" mtu "$mtu" type veth peer name eth0 netns "$host"
    ip link set "${host}u" master "$bridge" up
    ip -n "$host" addr add "$net.$((i + 1))/24" dev eth0
    ip -n "$host" link set eth0 mtu "$mtu" up
    ip -n "$host" link set lo up
    data="$dir/$host"
    mkdir -p "$data"
    "$shoal" image import "$image/busybox.tar" --name local/busybox:1 --data-dir "$data" >/dev/null
    for imp in "${imports[@]}"; do
        "$shoal" image import "${imp%%=*}" --name "${imp#*=}" --data-dir "$data" >/dev/null
    done
    start_agent "$i"
done

for _ in $(seq 1 200); do
    ready=$(SHOAL_CONFIG=$config "$shoal" --server "$server_url" get nodes -o json 2>/dev/null \
        | grep -c '"state": *"ready"' || true)
    [ "$ready" -ge "$n" ] && break
    sleep 0.1
done
if [ "${ready:-0}" -lt "$n" ]; then
    echo "hack/cluster.sh: only ${ready:-0} of $n nodes became ready" >&2
    false
fi
trap - ERR
echo "hack/cluster.sh: $n hosts ${prefix}0..${prefix}$((n - 1)) on $net.0/24; logs in $dir; 'hack/cluster.sh down --prefix $prefix' removes them" >&2
echo "SHOAL_SERVER=$server_url SHOAL_CONFIG=$config"
