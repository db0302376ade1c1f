#!/usr/bin/env bash
# The one test command: installs what is missing, then runs every test in the
# workspace. Tests start their own real services (etcd, shoal servers) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
# Two cores: keep test binaries from starving the servers they start.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --workspace --locked "$@"
