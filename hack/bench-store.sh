#!/usr/bin/env bash
# Store benchmark: writes/s and watch-delivery p99 for the embedded and etcd stores,
# with raw etcd puts (same client, same concurrency) measured in the same run.
# Prints `name: value unit` lines last.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
cargo build --release --locked -p shoal-store --example bench-store >&2
start_etcd
trap stop_etcd EXIT
./target/release/examples/bench-store --etcd "$ETCD_ENDPOINT" "$@"
