#!/usr/bin/env bash
# Network benchmark (as root), all in one run on the same two namespace hosts
# (hack/cluster.sh): task-to-task TCP throughput (iperf3) and round-trip time across
# hosts over shoal's overlay, against a VXLAN built by hand between the same two
# hosts and against the plain underlay veth; new connections per second through a
# service VIP against straight to a task; time from a task's start to its answering
# through its VIP; time to write a VIP table of 1,000 services x 10 backends, and
# connections per second through a VIP with 1,000 services against 10.
# iperf3, ping and the connection loops run inside the containers' network
# namespaces (nsenter), so they cross exactly the datapath the tasks use.
# Prints `name: value unit` lines last.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "hack/bench-network.sh makes namespaces: run it as root" >&2; exit 1; }
ensure_packages
command -v iperf3 >/dev/null && command -v ping >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 iputils-ping >/dev/null
}
build_release --bin shoal --example bench-vips
shoal=$PWD/target/release/shoal
prefix=bnet
export SHOAL_CLUSTER_NET=10.213.9 SHOAL_BIN=$shoal
net=$SHOAL_CLUSTER_NET
dir=/tmp/shoal-cluster-$prefix
secs=${BENCH_SECONDS:-5}

cleanup() {
    for h in 0 1; do ip -n "$prefix$h" link del vxh 2>/dev/null || true; done
    pkill -f "iperf3 -s" 2>/dev/null || true
    hack/cluster.sh down --prefix "$prefix" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# Its last line is `SHOAL_SERVER=URL SHOAL_CONFIG=FILE`.
# shellcheck disable=SC2046 # two words, each an assignment
export $(hack/cluster.sh up 2 --prefix "$prefix" | tail -1)

"$shoal" apply -f - >/dev/null <<'EOF'
apiVersion: shoal.dev/v1
kind: Network
metadata: {name: bench}
spec: {driver: overlay, subnet: 10.10.9.0/24}
---
apiVersion: shoal.dev/v1
kind: Service
metadata: {name: perf}
spec:
  image: local/busybox:1
  command: [httpd, -f, -p, '80', -h, /www]
  replicas: 2
  networks: [bench]
EOF

# (node, container netns, overlay address) of each running perf task, one per line.
tasks() {
    "$shoal" get tasks -l shoal.dev/service=perf -o json | python3 -c '
import json, sys
for t in json.load(sys.stdin)["items"]:
    s = t.get("status", {})
    if s.get("state") != "running": continue
    ip = [a.split("=")[1] for a in s.get("addresses", []) if a.startswith("bench=")]
    if ip: print(t["spec"]["node"], s["containerId"], ip[0])'
}
for _ in $(seq 1 300); do
    [ "$(tasks | awk '{print $1}' | sort -u | wc -l)" -eq 2 ] && break
    sleep 0.1
done
read -r node_a id_a ip_a < <(tasks | sort | sed -n 1p)
read -r node_b id_b ip_b < <(tasks | sort | sed -n 2p)
[ "$node_a" != "$node_b" ] || { echo "bench: both tasks on $node_a" >&2; exit 1; }
ns_a=$dir/$node_a/netns/$id_a
ns_b=$dir/$node_b/netns/$id_b
host_a=$net.$((${node_a#"$prefix"} + 1))
host_b=$net.$((${node_b#"$prefix"} + 1))

# Throughput: iperf3 server in `$1` (an nsenter --net target or "ip netns exec NS"),
# client in `$2`, to address `$3`; Gbit/s received.
iperf() {
    $1 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
    local server=$!
    sleep 0.5
    $2 iperf3 -c "$3" -p 5201 -t "$secs" -J | python3 -c '
import json, sys
print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
    wait "$server" 2>/dev/null || true
}
# Round trip: the average of 500 pings, in microseconds.
rtt() {
    $1 ping -c 500 -i 0.002 -q "$2" | awk -F'/' '/^rtt/ {printf "%.0f\n", $5 * 1000}'
}

in_a="nsenter --net=$ns_a"
in_b="nsenter --net=$ns_b"
# The same two hosts, a VXLAN by hand: static remote, learning off, as an operator
# would build it.
for side in a b; do
    if [ $side = a ]; then h=$node_a; l=$host_a; r=$host_b; o=1; else h=$node_b; l=$host_b; r=$host_a; o=2; fi
    ip -n "$h" link add vxh type vxlan id 999 dstport 4790 local "$l" remote "$r" dev eth0 nolearning
    ip -n "$h" link set vxh mtu 1450 up
    ip -n "$h" addr add "192.168.251.$o/24" dev vxh
done
# Two cores carry both ends of every stream, so one 5 s run varies by ~10%: the
# three paths take turns, $rounds times, and each figure is its median.
rounds=${BENCH_ROUNDS:-3}
runs_u=() runs_h=() runs_o=()
for _ in $(seq "$rounds"); do
    runs_u+=("$(iperf "ip netns exec $node_b" "ip netns exec $node_a" "$host_b")")
    runs_h+=("$(iperf "ip netns exec $node_b" "ip netns exec $node_a" 192.168.251.2)")
    runs_o+=("$(iperf "$in_b" "$in_a" "$ip_b")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
underlay_gbps=$(median "${runs_u[@]}")
vxlan_by_hand_gbps=$(median "${runs_h[@]}")
overlay_gbps=$(median "${runs_o[@]}")
vxlan_by_hand_rtt_us=$(rtt "ip netns exec $node_a" 192.168.251.2)
for h in "$node_a" "$node_b"; do ip -n "$h" link del vxh; done
overlay_rtt_us=$(rtt "$in_a" "$ip_b")
underlay_rtt_us=$(rtt "ip netns exec $node_a" "$host_b")

# Connections per second: a server that accepts, writes a byte and closes, in both
# tasks' namespaces (the VIP's backends), on 9000 (straight) and 9001 (via the VIP:
# a port each, so one run's TIME_WAIT does not slow the other).
server_py='
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096)
    while True:
        c, _ = s.accept(); c.send(b"x"); c.close()
for p in (9000, 9001): threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()'
client_py='
import socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n, end = 0, time.time() + secs
while time.time() < end:
    s = socket.create_connection((host, port), timeout=2); s.recv(1); s.close(); n += 1
print(round(n / secs))'
$in_a python3 -c "$server_py" & srv_a=$!
$in_b python3 -c "$server_py" & srv_b=$!
sleep 0.5
vip=$("$shoal" network inspect bench -o json | python3 -c '
import json, sys
print([s["vip"] for s in json.load(sys.stdin)["services"] if s["name"] == "perf"][0])')
direct_conn_per_s=$($in_a python3 -c "$client_py" "$ip_b" 9000 "$secs")
vip_conn_per_s=$($in_a python3 -c "$client_py" "$vip" 9001 "$secs")
kill "$srv_a" "$srv_b" 2>/dev/null || true

# A new service's task: from its start (status.startedAt) to its first answer
# through its VIP, asked from task a every 2 ms.
"$shoal" apply -f - >/dev/null <<'EOF'
apiVersion: shoal.dev/v1
kind: Service
metadata: {name: probe}
spec:
  image: local/busybox:1
  command: [httpd, -f, -p, '80', -h, /www]
  networks: [bench]
EOF
probe_vip=""
for _ in $(seq 1 100); do
    probe_vip=$("$shoal" network inspect bench -o json | python3 -c '
import json, sys
v = [s["vip"] for s in json.load(sys.stdin)["services"] if s["name"] == "probe"]
print(v[0] if v else "")')
    [ -n "$probe_vip" ] && break
    sleep 0.05
done
answered=$($in_a python3 -c '
import socket, sys, time
end = time.time() + 30
while time.time() < end:
    try:
        s = socket.create_connection((sys.argv[1], 80), timeout=0.05); s.close()
        print("%.3f" % time.time()); break
    except OSError:
        time.sleep(0.002)' "$probe_vip")
started=$("$shoal" get tasks -l shoal.dev/service=probe -o json | python3 -c '
import json, sys, datetime
t = json.load(sys.stdin)["items"][0]["status"]["startedAt"]
print("%.3f" % datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp())')
task_start_to_vip_ms=$(python3 -c "print(round(($answered - $started) * 1000))")

vips=$(./target/release/examples/bench-vips)

echo "--- overlay against a hand-built VXLAN and the underlay (same hosts, same run) ---"
echo "underlay_gbps: $underlay_gbps Gbit/s"
echo "vxlan_by_hand_gbps: $vxlan_by_hand_gbps Gbit/s"
echo "overlay_gbps: $overlay_gbps Gbit/s"
echo "overlay_of_vxlan_by_hand: $(python3 -c "print(round($overlay_gbps / $vxlan_by_hand_gbps, 3))") ratio"
echo "underlay_rtt_us: $underlay_rtt_us us"
echo "vxlan_by_hand_rtt_us: $vxlan_by_hand_rtt_us us"
echo "overlay_rtt_us: $overlay_rtt_us us"
echo "direct_conn_per_s: $direct_conn_per_s conn/s"
echo "vip_conn_per_s: $vip_conn_per_s conn/s"
echo "task_start_to_vip_ms: $task_start_to_vip_ms ms"
echo "$vips"
