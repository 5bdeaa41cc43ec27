#!/usr/bin/env bash
# Packs one static binary as a one-layer OCI image layout archive, without a container
# engine (in the manner of scripts/image.sh), byte-for-byte reproducible:
#
#   testenv/node/image.sh BINARY REFERENCE USER OUT.tar
#
# e.g. testenv/node/image.sh pause registry.k8s.io/pause:3.10.2 65535:65535 pause.oci.tar
#
# REFERENCE must be fully qualified (docker.io/example/hello:1, not example/hello:1): the
# CRI normalizes a pod's image name before it looks it up, and `ctr images import` does not.
# The binary becomes /<its name>, the image's entrypoint, running as USER (uid:gid).
# The manifest carries both `io.containerd.image.name` (the full REFERENCE, which
# `ctr -n k8s.io images import` names the image by) and `org.opencontainers.image.ref.name`
# (its tag, for other OCI tools).
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 BINARY REFERENCE USER OUT.tar" >&2; exit 2; }
binary="$1" ref="$2" user="$3" out="$4"
name="$(basename "$binary")"
tag="${ref##*:}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fs="$work/rootfs"
mkdir -p "$fs/tmp" "$fs/etc"
install -m 0755 "$binary" "$fs/$name"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$fs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$fs/etc/group"
chmod 1777 "$fs/tmp"
find "$fs" -exec touch -h -d @0 {} +

tarball() { # dir out
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$1" -cf "$2" .
}
tarball "$fs" "$work/layer.tar"
diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"

layout="$work/oci"
mkdir -p "$layout/blobs/sha256"
blob() { # file -> digest (the file moves into the layout)
  local digest
  digest="$(sha256sum "$1" | cut -d' ' -f1)"
  mv "$1" "$layout/blobs/sha256/$digest"
  echo "$digest"
}
size() { stat -c %s "$layout/blobs/sha256/$1"; }

layer="$(blob "$work/layer.tar.gz")"
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"User":"$user","Entrypoint":["/$name"],"Env":["PATH=/"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"testenv/node/image.sh"}]}
JSON
config="$(blob "$work/config.json")"
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$config")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$(size "$layer")}]}
JSON
manifest="$(blob "$work/manifest.json")"
cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$(size "$manifest"),"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$ref","org.opencontainers.image.ref.name":"$tag"}}]}
JSON
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
find "$layout" -exec touch -h -d @0 {} +
tarball "$layout" "$out.tmp"
mv "$out.tmp" "$out"
echo "image: $ref sha256:$manifest ($(stat -c %s "$out") bytes)" >&2
