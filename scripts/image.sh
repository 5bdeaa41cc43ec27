#!/usr/bin/env bash
# Builds the operator's container image without a container engine: the static release
# binary (`make release`), the CA certificates and a passwd entry for uid 65532, as one
# layer of an OCI image layout (target/image/oci) and its archive
# (target/image/rentedhost-operator.oci.tar), and the binary's SBOM beside them
# (target/image/rentedhost-operator.cdx.json), all byte-for-byte reproducible.
#
#   scripts/image.sh [TAG]      default tag: the crate's version
#
# Load or push it with any OCI tool, for example:
#   podman load -i target/image/rentedhost-operator.oci.tar
#   skopeo copy oci:target/image/oci:TAG docker://REGISTRY/rentedhost-operator:TAG
# The Dockerfile builds the same image where a Docker engine runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="$root/target/x86_64-unknown-linux-gnu/release/rentedhost-operator"
certs=/etc/ssl/certs/ca-certificates.crt
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
tag="${1:-$version}"
out="$root/target/image"

[ -x "$binary" ] || { echo "image: $binary is missing: run 'make release' first" >&2; exit 1; }
[ -f "$certs" ] || { echo "image: $certs is missing: install Debian's ca-certificates" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fs="$work/rootfs"
mkdir -p "$fs/etc/ssl/certs" "$fs/tmp"
install -m 0755 "$binary" "$fs/rentedhost-operator"
install -m 0644 "$certs" "$fs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$fs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$fs/etc/group"
chmod 1777 "$fs/tmp"
find "$fs" -exec touch -h -d @0 {} +

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$fs" -cf "$work/layer.tar" .
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
commit="$("$binary" --version | sed -n 's/.*(commit \(.*\))/\1/p')"
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"User":"65532:65532","Entrypoint":["/rentedhost-operator"],"Cmd":["run"],"Env":["PATH=/","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"rentedhost-operator","org.opencontainers.image.version":"$version","org.opencontainers.image.revision":"$commit","org.opencontainers.image.licenses":"Apache-2.0"}},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"scripts/image.sh"}]}
JSON
config="$(blob "$work/config.json")"
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$config")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$(size "$layer")}]}
JSON
manifest="$(blob "$work/manifest.json")"
cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$(size "$manifest"),"annotations":{"io.containerd.image.name":"docker.io/library/rentedhost-operator:$tag","org.opencontainers.image.ref.name":"$tag"}}]}
JSON
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
find "$layout" -exec touch -h -d @0 {} +

mkdir -p "$out"
rm -rf "$out/oci"
cp -a "$layout" "$out/oci"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$layout" -cf "$out/rentedhost-operator.oci.tar" .
# The SBOM of the binary (CycloneDX 1.5): every crate compiled into it, no build or dev
# dependencies. Reproducible like the image: its serial number is the manifest's digest,
# its time the epoch, the checkout's path /src (as in the binary).
cdx=0.5.9
if ! cargo cyclonedx --version 2>/dev/null | grep -q " $cdx\$"; then
  echo "image: installing cargo-cyclonedx $cdx" >&2
  cargo install --locked --quiet "cargo-cyclonedx@$cdx"
fi
(cd "$root" && cargo cyclonedx -q --format json --describe binaries --spec-version 1.5 \
  --target x86_64-unknown-linux-gnu --no-build-deps)
serial="${manifest:0:8}-${manifest:8:4}-${manifest:12:4}-${manifest:16:4}-${manifest:20:12}"
sed -e "s/\"urn:uuid:[0-9a-f-]*\"/\"urn:uuid:$serial\"/" \
  -e 's/"timestamp": "[^"]*"/"timestamp": "1970-01-01T00:00:00Z"/' \
  -e "s|path+file://$root#|path+file:///src#|g" \
  "$root/rentedhost-operator_bin.cdx.json" >"$out/rentedhost-operator.cdx.json"
# cargo-cyclonedx describes every member of the workspace: the simulator's is not the image's.
rm -f "$root/rentedhost-operator_bin.cdx.json" "$root/simulator/xds-simulator_bin.cdx.json"
echo "image: rentedhost-operator:$tag sha256:$manifest, layer $(size "$layer") bytes compressed, $(stat -c %s "$work/layer.tar") uncompressed" >&2
echo "$out/rentedhost-operator.oci.tar"
