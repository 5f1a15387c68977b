#!/usr/bin/env bash
# The whole test suite: unit tests and the end-to-end tests on the real
# kernel (network namespaces, cgroups, eBPF). Needs root. Installs what it
# needs first (scripts/setup.sh), so it runs on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The end-to-end tests start the built binaries; build them in the same profile.
cargo build --release --locked --bins
cargo test --release --locked
