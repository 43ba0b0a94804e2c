#!/usr/bin/env bash
# Realtime, side by side in one run, same machine, loopback only:
#   1. ephemeral fan-out: N SSE subscribers spread over a 3-node PiCloud cluster,
#      RATE publishes/s (pubsub.publish through an app route, round-robin over
#      the nodes) vs the same load through a 3-node nats-server cluster (Debian
#      package); publish → receive p50/p99 and their ratios;
#   2. memory per idle subscriber: RSS delta of one fresh node / IDLE subscribers;
#   3. durable publish throughput (pubsub.publish_durable) vs kv.set through the
#      same cluster, wrk c=64, as a ratio.
# The load generator is bench/src/realtime_load.rs (the same raw-TCP client cost
# on both sides). Every loop is bounded in time.
#
# Usage: bench/realtime.sh [subscribers=1000] [rate=100] [seconds=10] [idle=5000]
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS="${1:-1000}"
RATE="${2:-100}"
SECS="${3:-10}"
IDLE="${4:-5000}"
WORK="$(mktemp -d /tmp/picloud-realtime-bench.XXXXXX)"
declare -A PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nats-server >/dev/null || need+=(nats-server)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Thousands of sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p picloud -p picloud-bench
BIN=target/release/picloud
LOAD=target/release/realtime-load
source bench/lib.sh
HTTP_PORTS=1818 PEER_PORTS=1717
# Subscribers are capped per app and per node, and connections per node and
# per client address, by default; every subscriber of the bench comes from
# 127.0.0.1, so the bench raises the caps.
export PICLOUD_REALTIME_SUBSCRIBERS_PER_NODE_MAX=20000 PICLOUD_REALTIME_SUBSCRIBERS_PER_APP_MAX=20000
export PICLOUD_HTTP_CONNECTIONS_MAX=20000 PICLOUD_HTTP_CONNECTIONS_PER_CLIENT_MAX=19000
export PICLOUD_ADMIN_KEY="realtime-bench-admin-key-0123456789" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

echo "# realtime, loopback, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"

# ---------- 1a. NATS: 3-node cluster ----------
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do [ "$j" != "$i" ] && routes="$routes,nats://127.0.0.1:622$j"; done
  nats-server -a 127.0.0.1 -p "422$i" --cluster "nats://127.0.0.1:622$i" --cluster_name bench \
    --routes "${routes#,}" >"$WORK/nats$i.log" 2>&1 &
  PIDS["nats$i"]=$!
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/422$i") 2>/dev/null && break; sleep 0.1; done
done
NATS_ADDRS=127.0.0.1:4221,127.0.0.1:4222,127.0.0.1:4223
NATS_OUT="$("$LOAD" nats --subs "$NATS_ADDRS" --publish "$NATS_ADDRS" --subject bench.t \
  --n "$SUBS" --rate "$RATE" --secs "$SECS")"
stop() { { kill -9 "${PIDS[$1]}"; wait "${PIDS[$1]}"; } 2>/dev/null || true; unset "PIDS[$1]"; }
for i in 1 2 3; do stop "nats$i"; done

# ---------- 1b. PiCloud: 3-node cluster ----------
start_three_picloud
PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1" "$BIN" deploy bench/apps/rtbench >/dev/null
PC_ADDRS="127.0.0.1:${HTTP_PORTS}1,127.0.0.1:${HTTP_PORTS}2,127.0.0.1:${HTTP_PORTS}3"
PC_OUT="$("$LOAD" sse --subs "$PC_ADDRS" --path /_/realtime/rtbench/bench/t \
  --publish "$PC_ADDRS" --publish-path /rtbench/pub --n "$SUBS" --rate "$RATE" --secs "$SECS")"

field() { awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}' <<<"$1"; }
echo "ephemeral fan-out, $SUBS subscribers over 3 nodes, $RATE publishes/s, ${SECS}s:"
echo "  picloud: $PC_OUT"
echo "  nats:    $NATS_OUT"
for p in p50 p99; do
  printf '  %s picloud/nats: %.2f\n' "$p" "$(awk -v a="$(field "$PC_OUT" "$p")" -v b="$(field "$NATS_OUT" "$p")" 'BEGIN {print a/b}')"
done

# ---------- 3. durable publish vs kv.set, same cluster ----------
leader_http() {
  PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1" "$BIN" --json cluster status | python3 -c 'import json,sys
s=json.load(sys.stdin); print(next(n["http"] for n in s["nodes"] if n["id"]==s["leader"]))'
}
LEADER="$(leader_http)"
cat >"$WORK/set.lua" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/rtbench/set/k" .. counter)
end
LUA
cat >"$WORK/pubd.lua" <<'LUA'
request = function() return wrk.format("POST", "/rtbench/pubd") end
LUA
wrk -t2 -c64 -d"${SECS}s" --latency -s "$WORK/set.lua" "http://$LEADER" >"$WORK/set.txt"
wrk -t2 -c64 -d"${SECS}s" --latency -s "$WORK/pubd.lua" "http://$LEADER" >"$WORK/pubd.txt"
SET="$(wrk_summary kv.set "$WORK/set.txt")"
PUBD="$(wrk_summary publish_durable "$WORK/pubd.txt")"
echo "durable publish vs kv.set, 3 nodes, leader, wrk c=64 ${SECS}s:"
echo "  $PUBD"
echo "  $SET"
printf '  publish_durable/kv.set: %.2f\n' "$(awk -v a="$(awk '{print $2}' <<<"$PUBD")" -v b="$(awk '{print $2}' <<<"$SET")" 'BEGIN {print a/b}')"
for i in 1 2 3; do stop "pc$i"; done

# ---------- 2. memory per idle subscriber, one fresh node ----------
# A fourth data dir (pc4), a one-node cluster of its own.
start_picloud 4
wait_http "http://127.0.0.1:${HTTP_PORTS}4/_/health"
PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}4" "$BIN" deploy bench/apps/rtbench >/dev/null
# One subscriber first, so the topic's actor and the app's code are loaded
# before the baseline is read.
"$LOAD" idle --subs "127.0.0.1:${HTTP_PORTS}4" --path /_/realtime/rtbench/bench/idle --n 1 --hold-secs 1 >/dev/null
sleep 1
BEFORE="$(rss_kb "${PIDS[pc4]}")"
"$LOAD" idle --subs "127.0.0.1:${HTTP_PORTS}4" --path /_/realtime/rtbench/bench/idle --n "$IDLE" --hold-secs 8 >"$WORK/idle.txt" &
IDLE_PID=$!
for _ in $(seq 1 300); do grep -q connected "$WORK/idle.txt" 2>/dev/null && break; sleep 0.1; done
sleep 2
AFTER="$(rss_kb "${PIDS[pc4]}")"
wait "$IDLE_PID" || true
echo "idle subscribers on one node: $(cat "$WORK/idle.txt"), RSS ${BEFORE} kB → ${AFTER} kB"
printf '  per subscriber: %.1f KiB\n' "$(awk -v a="$AFTER" -v b="$BEFORE" -v n="$IDLE" 'BEGIN {print (a-b)/n}')"
