#!/usr/bin/env bash
# Log pipeline benchmark: tail -> forward out, task logs -> HTTP and forward in,
# against `cat` of the same file into a TCP sink and rsyslog (imfile -> omfwd) on the
# same file, in one run; each pipeline in its own process, its peak RSS measured.
# Prints `name: value unit` lines last.
# Extra arguments: --mib N (the file's size, default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
# The real peer the tail figure is held against.
[ -x /usr/sbin/rsyslogd ] || { apt-get update -qq && apt-get install -y -qq rsyslog >/dev/null; }
cargo build --release --locked -p shoal-pipeline --example bench-logs >&2
./target/release/examples/bench-logs "$@"
