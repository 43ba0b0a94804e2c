#!/usr/bin/env bash
# Outbound HTTP speed (issue 13, "Speed"): requests/s of a PiCloud route whose
# script does `http.get` to a local allowed listener (bench/src/axum_hello.rs),
# against wrk hitting that same listener directly; prints both and the ratio.
# One node, loopback only.
#
# Usage: bench/http_out.sh [duration_seconds=10] [connections=64]
# PICLOUD_BENCH_PROFILE=debug builds and runs debug binaries: a smoke test of
# the script only, its numbers mean nothing. Real figures come from release.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
PROFILE="${PICLOUD_BENCH_PROFILE:-release}"
WORK="$(mktemp -d /tmp/picloud-http-out-bench.XXXXXX)"
declare -A PIDS=()
source bench/lib.sh
trap 'for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
command -v wrk >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p picloud -p picloud-bench
else
  cargo build -q -p picloud -p picloud-bench
fi
BIN="target/$PROFILE/picloud"
UPSTREAM=127.0.0.1:19101
NODE=127.0.0.1:19111

"target/$PROFILE/axum-hello" "$UPSTREAM" >/dev/null &
PIDS[upstream]=$!
export PICLOUD_ADMIN_KEY="http-out-bench-admin-key-0123456789" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY" PICLOUD_URL="http://$NODE"
# Slots above the connection count: the bench measures the path, not http_busy.
"$BIN" serve --data-dir "$WORK/pc" --http "$NODE" --peer 127.0.0.1:19112 \
  --http-out-allow "$UPSTREAM" --http-out-per-app-max 1024 --http-out-per-node-max 1024 \
  >>"$WORK/pc.log" 2>&1 &
PIDS[picloud]=$!
wait_http "http://$UPSTREAM/hello"
wait_http "$PICLOUD_URL/_/health"
"$BIN" deploy bench/apps/outbench >/dev/null
ROUTE="$PICLOUD_URL/outbench/get?url=http://$UPSTREAM/hello"
[ "$(curl -fsS "$ROUTE")" = hello ] || { echo "the route did not answer hello" >&2; exit 1; }

wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://$UPSTREAM/hello" >"$WORK/direct.txt"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$ROUTE" >"$WORK/route.txt"
direct="$(wrk_summary wrk-direct "$WORK/direct.txt")"
route="$(wrk_summary picloud-http-get "$WORK/route.txt")"
echo "$direct"
echo "$route"
awk -v d="$(echo "$direct" | awk '{print $2}')" -v r="$(echo "$route" | awk '{print $2}')" \
  'BEGIN { printf "http.get route / direct: %.2f (%s profile)\n", r / d, "'"$PROFILE"'" }'
