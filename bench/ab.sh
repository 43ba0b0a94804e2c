#!/usr/bin/env bash
# Before/after: two picloud binaries side by side in one run, on the same
# machine, alternating wrk runs so that drift in the machine's load hits both
# alike. Prints req/s, p50 and p99 of each run and the after/before ratio of
# the summed req/s per route.
#
# Usage: bench/ab.sh BEFORE_BIN AFTER_BIN [duration_seconds=5] [connections=64] [rounds=3]
# Build a "before" binary from an older commit in a worktree, e.g.
#   git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release -p picloud)
#   bench/ab.sh /tmp/before/target/release/picloud target/release/picloud
# Traffic stays on loopback; every run is bounded by its duration.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE="$1"
AFTER="$2"
DURATION="${3:-5}"
CONNECTIONS="${4:-64}"
ROUNDS="${5:-3}"
WORK="$(mktemp -d /tmp/picloud-ab.XXXXXX)"
declare -A PIDS
# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
command -v wrk >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

export PICLOUD_ADMIN_KEY="bench-admin-key-0123456789"
start() { # name bin http_port peer_port
  "$2" serve --data-dir "$WORK/$1" --http "127.0.0.1:$3" --peer "127.0.0.1:$4" >"$WORK/$1.log" 2>&1 &
  PIDS[$1]=$!
  wait_http "http://127.0.0.1:$3/_/health"
  PICLOUD_URL="http://127.0.0.1:$3" PICLOUD_KEY="$PICLOUD_ADMIN_KEY" PICLOUD_CREDENTIALS="$WORK/creds.toml" \
    "$2" deploy examples/hello >/dev/null
  wait_http "http://127.0.0.1:$3/hello/plain"
}
start before "$BEFORE" 9301 9302
start after "$AFTER" 9303 9304

echo "# bench/ab.sh: wrk -t2 -c$CONNECTIONS -d${DURATION}s x $ROUNDS rounds, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
RESULTS="$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for route in plain greet/bench; do
    for side in before after; do
      port=9301; [ "$side" = after ] && port=9303
      wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/hello/$route" >"$WORK/wrk.txt"
      line="$(wrk_summary "$side-${route%%/*}" "$WORK/wrk.txt")"
      echo "round $round $line"
      echo "$line" >>"$RESULTS"
    done
  done
done
awk '{ sum[$1] += $2 } END {
  printf "after/before plain route  %.2f\n", sum["after-plain"] / sum["before-plain"]
  printf "after/before kv.incr route %.2f\n", sum["after-greet"] / sum["before-greet"]
}' "$RESULTS"
