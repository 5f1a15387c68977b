#!/usr/bin/env bash
# The benchmarks, in one run: no mesh, kmesh-rs (probe on and off) and two
# HAProxy sidecars side by side, then the agent's own cost (CPU, memory,
# ring buffer), then the user-space pipeline alone (criterion). Prints the
# tables; the side-by-side results go to target/kmesh-bench.json.
#
# Arguments go to `kmesh-bench run` (see `target/release/kmesh-bench run
# --help`), e.g. `scripts/bench.sh --repetitions 5 --duration 5s`.
# KMESH_BENCH_PIPELINE=0 skips the criterion part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bins
target/release/kmesh-bench run "$@"
if [ "${KMESH_BENCH_PIPELINE:-1}" != 0 ]; then
  cargo bench --locked -p kmesh-agent --bench telemetry -- pipeline
fi
