#!/usr/bin/env bash
# Agent benchmark (as root): task assigned-to-running latency for 50 containers,
# containers started per second and the agent's memory with 50 running, with raw
# `runc run` of the same bundle measured in the same run as the baseline.
# Prints `name: value unit` lines last. Extra arguments: --containers N.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
build_release --bin shoal --example bench-agent
./target/release/examples/bench-agent "$@"
