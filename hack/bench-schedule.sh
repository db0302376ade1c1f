#!/usr/bin/env bash
# Scheduling benchmark on both stores: 10,000 tasks on 1,000 simulated nodes, apply-to-
# running for 100 replicas, node-loss recovery; raw store writes measured in the same run.
# Prints `name: value unit` lines last. Extra arguments: --nodes N --tasks N
# --stores embedded,etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
cargo build --release --locked --bin shoal --example bench-schedule >&2
start_etcd
trap stop_etcd EXIT
./target/release/examples/bench-schedule --etcd "$ETCD_ENDPOINT" "$@"
