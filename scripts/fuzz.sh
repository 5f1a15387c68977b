#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails on the
# first crash (a panic, a sanitizer report, an input slower than
# FUZZ_INPUT_TIMEOUT seconds, or more memory than libFuzzer's 2 GB limit).
#
#   FUZZ_SECONDS        seconds per target (default 60; 0 skips fuzzing)
#   FUZZ_INPUT_TIMEOUT  seconds one input may take (default 25)
#   FUZZ_TARGETS        the targets to run (default: all, space-separated)
#
# Each target starts from its seeds (fuzz/corpus/<target>/seed-*, committed,
# written by fuzz/input/src/bin/make-seeds.rs with fuzz/<target>.dict) and
# whatever earlier local runs added beside them (not committed, see
# fuzz/.gitignore). A crash leaves its input in fuzz/artifacts/<target>/ and
# the fuzzer's log in fuzz/artifacts/<target>.log; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
#
# cargo-fuzz passes -Zsanitizer=address, a nightly-only flag. The machine's
# one toolchain is stable (rustup cannot fetch a nightly here), and
# RUSTC_BOOTSTRAP=1 lets it take the flag; `cargo +nightly fuzz` works too
# where a nightly is installed. scripts/setup.sh installs cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
input_timeout=${FUZZ_INPUT_TIMEOUT:-25}
read -r -a targets <<<"${FUZZ_TARGETS:-translate_document translate_ads}"
if [ "$seconds" -eq 0 ]; then
  echo "fuzz: skipped (FUZZ_SECONDS=0)"
  exit 0
fi
export RUSTC_BOOTSTRAP=1

# One build for all targets (the first builds the agent's dependency tree
# with sanitizer instrumentation: about 12 minutes on 2 cores, cached in
# fuzz/target afterwards).
start=$(date +%s)
if [ -z "${FUZZ_TARGETS:-}" ]; then
  cargo fuzz build
else
  for t in "${targets[@]}"; do cargo fuzz build "$t"; done
fi
echo "fuzz: built in $(($(date +%s) - start)) s"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t.log"
  args=(-max_total_time="$seconds" -timeout="$input_timeout" -print_final_stats=1)
  # A dictionary written by make-seeds (the documents' field names).
  [ -f "fuzz/$t.dict" ] && args+=(-dict="$PWD/fuzz/$t.dict")
  echo "fuzz: $t for $seconds s"
  if cargo fuzz run "$t" -- "${args[@]}" >"$log" 2>&1; then
    # libFuzzer's closing lines: runs, speed and coverage.
    grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs)' "$log" | sed "s/^/fuzz: $t: /" || true
  else
    tail -n 80 "$log"
    echo "fuzz: $t FAILED; its log is $log, the input in fuzz/artifacts/$t/"
    failed+=("$t")
  fi
done
echo "fuzz: ${#targets[@]} targets, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
