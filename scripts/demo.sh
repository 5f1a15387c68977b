#!/usr/bin/env bash
# The main job: a small mesh on this machine, routed in the kernel and
# observed by kmesh-agent, with kmesh-top showing it live in the terminal.
#
#   service "reviews" 198.18.0.10:9080  weighted 80/10/10 over three backends
#   service "ratings" 198.18.0.11:9080  round robin over two backends
#
# The backends and clients live in a network namespace of their own with only
# a loopback interface, so no packet leaves the machine; the clients run in a
# cgroup the agent attaches to. Ctrl-C stops everything and removes the
# namespace, the cgroup and the pinned maps.
#
# KMESH_DEMO_SECONDS=N stops after N seconds; KMESH_DEMO_METRICS_ADDR picks
# the agent's HTTP address (default 127.0.0.1:9464). Without a terminal
# (output to a pipe or a file) the figures are printed once a second with
# `kmesh-top --once` instead, for KMESH_DEMO_SECONDS or 30 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bins

NAME=kmesh-demo
METRICS=${KMESH_DEMO_METRICS_ADDR:-127.0.0.1:9464}
CGROOT=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$CGROOT" ] || { echo "no cgroup v2 mount found" >&2; exit 1; }
CG=$CGROOT/$NAME
BPFFS=/sys/fs/bpf/$NAME
WORK=$(mktemp -d /tmp/kmesh-demo.XXXXXX)
BIN=target/release
ADMIN=$WORK/admin.sock
PIDS=()

cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -f "$CG/cgroup.procs" ]; then
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$CG/cgroup.procs"
    for _ in $(seq 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
  fi
  ip netns del "$NAME" 2>/dev/null || true
  rm -rf "$WORK"
  echo "demo stopped: namespace $NAME, cgroup $CG and pinned maps in $BPFFS removed"
}
trap cleanup EXIT INT TERM

ip netns del "$NAME" 2>/dev/null || true
ip netns add "$NAME"
ip -n "$NAME" link set lo up
mkdir -p "$CG"

cat > "$WORK/mesh.yaml" <<YAML
probe:
  report_interval_seconds: 5
services:
  - name: reviews
    vip: 198.18.0.10:9080
    policy: weighted
    backends:
      - address: 127.0.0.2:9080
        weight: 80
      - address: 127.0.0.3:9080
        weight: 10
      - address: 127.0.0.4:9080
        weight: 10
  - name: ratings
    vip: 198.18.0.11:9080
    policy: round_robin
    backends:
      - address: 127.0.0.5:9080
      - address: 127.0.0.6:9080
YAML

"$BIN/kmesh-testbed" --netns "$NAME" serve \
  --listen 127.0.0.2:9080 --listen 127.0.0.3:9080 --listen 127.0.0.4:9080 \
  --listen 127.0.0.5:9080 --listen 127.0.0.6:9080 > "$WORK/backends.log" &
PIDS+=($!)
"$BIN/kmesh-agent" run --config "$WORK/mesh.yaml" --cgroup "$CG" --bpffs-dir "$BPFFS" \
  --metrics-addr "$METRICS" --admin-socket "$ADMIN" 2> "$WORK/agent.log" &
PIDS+=($!)
if ! "$BIN/kmesh-testbed" ready --agent "$METRICS" --timeout-secs 60; then
  cat "$WORK/agent.log" >&2
  exit 1
fi

# Bounded streams of connections: 30 minutes at most.
"$BIN/kmesh-testbed" --netns "$NAME" --cgroup "$CG" client --target 198.18.0.10:9080 \
  --connections 36000 --rate 20 --concurrency 4 --request-bytes 300 --reply-bytes 4000 > /dev/null &
PIDS+=($!)
"$BIN/kmesh-testbed" --netns "$NAME" --cgroup "$CG" client --target 198.18.0.11:9080 \
  --connections 18000 --rate 10 --concurrency 2 --request-bytes 100 --reply-bytes 20000 > /dev/null &
PIDS+=($!)

SECS=${KMESH_DEMO_SECONDS:-0}
if [ -t 0 ] && [ -t 1 ]; then
  if [ "$SECS" -gt 0 ]; then
    "$BIN/kmesh-top" --admin-socket "$ADMIN" --exit-after "${SECS}s"
  else
    "$BIN/kmesh-top" --admin-socket "$ADMIN"
  fi
else
  end=$((SECONDS + (SECS > 0 ? SECS : 30)))
  while [ "$SECONDS" -lt "$end" ]; do
    "$BIN/kmesh-top" --admin-socket "$ADMIN" --once
    echo
  done
fi
