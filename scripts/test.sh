#!/usr/bin/env bash
# The whole test suite: unit tests and the end-to-end tests on the real
# kernel (network namespaces, cgroups, eBPF), then each fuzz target for a
# bounded time (scripts/fuzz.sh; FUZZ_SECONDS per target, 0 skips it). Needs
# root. Installs what it needs first (scripts/setup.sh), so it runs on a
# fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The end-to-end tests start the built binaries; build them in the same profile.
cargo build --release --locked --bins
cargo test --release --locked
bash scripts/fuzz.sh
