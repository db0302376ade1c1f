#!/usr/bin/env bash
# Log pipeline benchmark: tail -> forward out and forward in, against `cat` of the
# same file into a TCP sink, in one run. Prints `name: value unit` lines last.
# Extra arguments: --mib N (the file's size, default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
cargo build --release --locked -p shoal-pipeline --example bench-logs >&2
./target/release/examples/bench-logs "$@"
