#!/usr/bin/env bash
# GitOps benchmark on etcd against git http-backend (lighttpd) on loopback: commit-to-
# applied through the webhook and by polling, and syncing 1,000 manifests; raw git
# fetch/clone and a direct `shoal apply` of the same manifests measured in the same run.
# Prints `name: value unit` lines last.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
cargo build --release --locked --bin shoal --example bench-gitops >&2
start_etcd
trap stop_etcd EXIT
./target/release/examples/bench-gitops --etcd "$ETCD_ENDPOINT" "$@"
