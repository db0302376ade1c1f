#!/usr/bin/env bash
# The one test command: installs what is missing, then runs every test in the
# workspace. Tests start their own real services (etcd, shoal servers) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
# Agents never touch the store: the crate graph says so, and this keeps it saying so.
if cargo tree -p shoal-agent -e normal --locked --prefix none | grep -E '^(shoal-store|redb|etcd-client) '; then
    echo "hack/test.sh: shoal-agent links the store (see ARCHITECTURE.md, invariants)" >&2
    exit 1
fi
# Two cores: keep test binaries from starving the servers they start.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --workspace --locked "$@"
