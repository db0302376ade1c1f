#!/usr/bin/env bash
# A one-node shoal on this machine, as root: installs what is missing, builds, makes
# the example image (busybox-static, as local/busybox:1) and runs `shoal up` with the
# example manifests, streaming events. Data in ./.shoal-data (override with
# SHOAL_DATA_DIR). Extra arguments go to `shoal up`.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "hack/up.sh runs containers: run it as root" >&2; exit 1; }
ensure_packages
build_release
data="${SHOAL_DATA_DIR:-$PWD/.shoal-data}"
mkdir -p "$data"
if ! ./target/release/shoal image ls -o name --data-dir "$data/node" | grep -qx 'docker.io/local/busybox:1'; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    hack/build-test-image.sh "$work/layout" >/dev/null
    tar -C "$work/layout" -cf "$work/image.tar" .
    ./target/release/shoal image import "$work/image.tar" --name local/busybox:1 --data-dir "$data/node" >&2
fi
echo "shoal: API on https://127.0.0.1:7443 (mutual TLS; the admin config goes to ~/.shoal/config, also the sudo user's); try ./target/release/shoal get tasks, and curl http://127.0.0.1:8080/www/index.html (the example web service)" >&2
exec ./target/release/shoal up -f manifests/examples/ --data-dir "$data" "$@"
