#!/usr/bin/env bash
# Builds the small test image, from Debian's busybox-static, as an OCI image layout in
# OUT (tag "1"): one gzip layer with /bin/busybox and its applets, /etc/passwd, /tmp.
# Reproducible (fixed mtimes and owners), so its digests are the same on every run.
# Usage: hack/build-test-image.sh OUT
set -euo pipefail
out=${1:?usage: build-test-image.sh OUT}
# busybox-static's binary (it conflicts with the dynamic busybox package).
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "busybox-static is not installed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www"
cp "$busybox" "$root/bin/busybox"
for applet in sh ls cat echo sleep true false env id hostname ps wget httpd printf \
              mkdir rm touch kill date grep head tail wc uname test; do
    ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo "hello from shoal" >"$root/www/index.html"
chmod 1777 "$root/tmp"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
mv "$work/layer.tar.gz" "$out/blobs/sha256/$layer_digest"
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/build-test-image.sh"}]}
JSON
config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$out/blobs/sha256/$config_digest"
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
manifest_size=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$out/blobs/sha256/$manifest_digest"
cat >"$out/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}
JSON
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
echo "sha256:$manifest_digest"
