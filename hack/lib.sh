# Shared helpers for hack/*.sh. Source it; do not run it.

# Installs the Debian packages shoal's tests and benchmarks need, when missing.
ensure_packages() {
    local missing=()
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v etcdctl >/dev/null || missing+=(etcd-client)
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    command -v runc >/dev/null || missing+=(runc)
    command -v openssl >/dev/null || missing+=(openssl)
    # An agent whose clock is later than the test's, to see it renew its certificate.
    command -v faketime >/dev/null || missing+=(faketime)
    # Images: a real registry, a client to fill it, and the test image's busybox.
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v skopeo >/dev/null || missing+=(skopeo)
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
    # GitSync: git (its daemon and http-backend are the test servers), lighttpd to
    # serve http-backend over HTTP as git's documentation shows, curl to call the webhook,
    # sshd for ssh:// (its own keys and port; the system service is not used).
    command -v git >/dev/null || missing+=(git)
    command -v lighttpd >/dev/null || missing+=(lighttpd)
    command -v curl >/dev/null || missing+=(curl)
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    # Networks: VIP tables (nft), and hack/cluster.sh's namespaces and checks (ip,
    # bridge, nsenter, findmnt).
    command -v nft >/dev/null || missing+=(nftables)
    command -v bridge >/dev/null || missing+=(iproute2)
    command -v nsenter >/dev/null || missing+=(util-linux)
    # gRPC reflection as Python clients ask for it (Debian's python3 and its grpcio).
    /usr/bin/python3 -c 'import grpc' 2>/dev/null || missing+=(python3-grpcio)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "hack: installing ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Starts etcd on a free loopback port in a temp dir; sets ETCD_ENDPOINT, ETCD_PID and
# ETCD_DIR. Pair it with `trap stop_etcd EXIT`: a benchmark's etcd holds ~100 MB.
start_etcd() {
    local dir port peer
    dir=$(mktemp -d)
    ETCD_DIR=$dir
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    etcd --name bench --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "bench=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
    ETCD_PID=$!
    ETCD_ENDPOINT="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINT" endpoint health >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "etcd did not start; log:" >&2
    cat "$dir/etcd.log" >&2
    return 1
}

# Stops the etcd start_etcd started and removes its data.
stop_etcd() {
    if [ -n "${ETCD_PID:-}" ]; then
        kill "$ETCD_PID" 2>/dev/null || true
        wait "$ETCD_PID" 2>/dev/null || true # killed by TERM: not the script's failure
    fi
    if [ -n "${ETCD_DIR:-}" ]; then rm -rf "$ETCD_DIR"; fi
}

# Release binaries: `cargo build --release --locked ARGS...`, then the per-container
# monitor linked statically (static-pie), as it is deployed: one runs per container,
# and a static monitor maps no libc.so or ld.so, which halves what it holds
# (ARCHITECTURE.md, "shoal-monitor is a program of its own"). `cargo rustc` passes the
# flag to that binary's final compile only; the libraries it links are the same.
build_release() {
    cargo build --release --locked "$@" >&2
    cargo rustc --release --locked --bin shoal-monitor -- -C target-feature=+crt-static >&2
}
