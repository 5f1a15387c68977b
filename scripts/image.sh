#!/usr/bin/env bash
# Builds the container image with buildah (no Docker engine needed), from
# scratch: kmesh-agent and kmesh-top, stripped, and the C libraries they
# link (glibc's loader, libc, libm, libgcc_s) at their usual paths. Nothing
# else: no shell, no package manager. The entrypoint is `kmesh-agent`, the
# command `run`; `kmesh-top` and `kmesh-agent model` work through
# `kubectl exec`.
#
#   scripts/image.sh                 -> kmesh-rs:<version> in buildah's default storage
#   KMESH_IMAGE=registry.example.com/kmesh-rs:0.1.0 scripts/image.sh
#   KMESH_CONTAINER_STORAGE="--root DIR --runroot DIR --storage-driver vfs" scripts/image.sh
#
# Labels and annotations: org.opencontainers.image.{title,description,
# version,revision,created,licenses} and .source (the clone's origin, or
# KMESH_IMAGE_SOURCE).
#
# Prints the image name and its size.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bins

VERSION=$(cargo pkgid -p kmesh-agent | sed 's/.*[#@]//')
IMAGE=${KMESH_IMAGE:-kmesh-rs:$VERSION}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# Where the source lives: the clone's origin unless given.
SOURCE=${KMESH_IMAGE_SOURCE:-$(git config --get remote.origin.url 2>/dev/null || true)}
# shellcheck disable=SC2206 # storage options are words on purpose
BUILDAH=(buildah ${KMESH_CONTAINER_STORAGE:-})

stage=$(mktemp -d)
ctr=
cleanup() {
  rm -rf "$stage"
  [ -z "$ctr" ] || "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT

for bin in kmesh-agent kmesh-top; do
  strip --strip-all -o "$stage/$bin" "target/release/$bin"
done
# The libraries the binaries load, as the loader resolves them here.
mapfile -t libs < <(ldd target/release/kmesh-agent target/release/kmesh-top |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)

ctr=$("${BUILDAH[@]}" from scratch)
"${BUILDAH[@]}" copy --quiet --chmod 0755 "$ctr" "$stage/kmesh-agent" "$stage/kmesh-top" /usr/bin/ >/dev/null
for lib in "${libs[@]}"; do
  "${BUILDAH[@]}" copy --quiet "$ctr" "$(readlink -f "$lib")" "$lib" >/dev/null
done

created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
meta=(
  "org.opencontainers.image.title=kmesh-rs"
  "org.opencontainers.image.description=kmesh-rs node agent (kmesh-agent) and dashboard (kmesh-top): service routing and connection telemetry in eBPF"
  "org.opencontainers.image.version=$VERSION"
  "org.opencontainers.image.revision=$REVISION"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.created=$created"
)
[ -z "$SOURCE" ] || meta+=("org.opencontainers.image.source=$SOURCE")
config=(--entrypoint '["/usr/bin/kmesh-agent"]' --cmd run --user 0:0 --workingdir /)
for m in "${meta[@]}"; do
  config+=(--label "$m" --annotation "$m")
done
"${BUILDAH[@]}" config "${config[@]}" "$ctr"
"${BUILDAH[@]}" commit --quiet "$ctr" "$IMAGE" >/dev/null
ctr=
size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" | head -1)
echo "$IMAGE $size"
