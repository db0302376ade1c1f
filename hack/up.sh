#!/usr/bin/env bash
# Starts shoal on this machine: installs what the build needs when missing, builds,
# and runs `shoal server` on 127.0.0.1:7443 with the embedded store in ./.shoal-data
# (override with SHOAL_DATA_DIR). Extra arguments go to `shoal server`.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
cargo build --release --locked >&2
export SHOAL_DATA_DIR="${SHOAL_DATA_DIR:-$PWD/.shoal-data}"
echo "shoal: API on http://127.0.0.1:7443, data in $SHOAL_DATA_DIR" >&2
echo "shoal: in another terminal: ./target/release/shoal apply -f manifests/examples/" >&2
exec ./target/release/shoal server "$@"
