#!/usr/bin/env bash
# Replicated writes, failover and follower reads: a 3-node PiCloud cluster vs a
# 3-node etcd cluster (Debian etcd-server, fsync on both), same machine, same
# client (wrk), loopback. Prints req/s, p50/p99 and ratios, then failover medians.
#
# Usage: bench/cluster.sh [duration_seconds=10] [failover_runs=5]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
RUNS="${2:-5}"
WORK="$(mktemp -d /tmp/picloud-cluster-bench.XXXXXX)"
declare -A PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v etcd >/dev/null || need+=(etcd-server)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p picloud
BIN=target/release/picloud
source bench/lib.sh
HTTP_PORTS=1808 PEER_PORTS=1707

# ---------- etcd: 3 members ----------
ETCD_CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
start_etcd() { # index state
  local i=$1 state=$2
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state "$state" --log-level error \
    >"$WORK/etcd$i.log" 2>&1 &
  PIDS["etcd$i"]=$!
}
for i in 1 2 3; do start_etcd "$i" new; done
for i in 1 2 3; do
  for _ in $(seq 1 100); do curl -fsS -X POST -d '{}' "http://127.0.0.1:2379$i/v3/maintenance/status" >/dev/null 2>&1 && break; sleep 0.1; done
done

# ---------- PiCloud: 3 nodes ----------
export PICLOUD_ADMIN_KEY="cluster-bench-admin-key-0123456789" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"
start_three_picloud
PICLOUD_URL=http://127.0.0.1:18081 "$BIN" deploy bench/apps/kvbench >/dev/null

cat >"$WORK/picloud-put.lua" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/kvbench/put/k" .. math.random(1, 1000000) .. "-" .. counter)
end
LUA
cat >"$WORK/etcd-put.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"key":"YmVuY2g=","value":"MQ=="}'
wrk.headers["Content-Type"] = "application/json"
LUA
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); printf "%.2f", v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.2f", v } else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.2f", v*1000 } else printf "%s", v }'; }
run_wrk() { # connections script url -> "rps p50 p99 non2xx"
  local c=$1 script=$2 url=$3 threads=2 out
  [ "$c" = 1 ] && threads=1
  out="$(wrk -t"$threads" -c"$c" -d"${DURATION}s" --latency -s "$script" "$url")"
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")") $(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")") $(awk '/Non-2xx/ {print $5}' <<<"$out")"
}
# The leader's HTTP address, asked of any live node, retried while an election runs.
leader_http() {
  for _ in $(seq 1 200); do
    for i in 1 2 3; do
      local found
      found="$(PICLOUD_URL="http://127.0.0.1:1808$i" "$BIN" --json cluster status 2>/dev/null | python3 -c 'import json,sys
s=json.load(sys.stdin)
print(next((n["http"] for n in s["nodes"] if n["id"]==s["leader"] and n["role"]=="leader"), ""))' 2>/dev/null || true)"
      if [ -n "$found" ]; then echo "$found"; return; fi
    done
    sleep 0.1
  done
  echo "no PiCloud leader" >&2; return 1
}

echo "# replicated writes, 3 nodes each, loopback, wrk ${DURATION}s, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-4s %-12s %10s %8s %8s   %-12s %10s %8s %8s   %s\n' c picloud "req/s" p50 p99 etcd "req/s" p50 p99 "picloud/etcd"
LEADER="$(leader_http)"
for c in 1 16 64; do
  read -r prps pp50 pp99 perr <<<"$(run_wrk "$c" "$WORK/picloud-put.lua" "http://$LEADER")"
  read -r erps ep50 ep99 eerr <<<"$(run_wrk "$c" "$WORK/etcd-put.lua" "http://127.0.0.1:23791/v3/kv/put")"
  printf '%-4s %-12s %10s %8s %8s   %-12s %10s %8s %8s   %.2f\n' "$c" "" "$prps" "$pp50" "$pp99" "" "$erps" "$ep50" "$ep99" "$(awk -v a="$prps" -v b="$erps" 'BEGIN {print a/b}')"
  [ -n "${perr:-}" ] && echo "  picloud non-2xx: $perr"; [ -n "${eerr:-}" ] && echo "  etcd non-2xx: $eerr"
done

# linearizable reads through a follower (PiCloud), c=64
FOLLOWER="$(PICLOUD_URL=http://127.0.0.1:18081 "$BIN" --json cluster status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(next(n["http"] for n in s["nodes"] if n["id"]!=s["leader"]))')"
cat >"$WORK/picloud-get.lua" <<'LUA'
request = function() return wrk.format("GET", "/kvbench/get/k" .. math.random(1, 1000)) end
LUA
read -r rrps rp50 rp99 _ <<<"$(run_wrk 64 "$WORK/picloud-get.lua" "http://$FOLLOWER")"
echo "picloud linearizable kv.get through a follower, c=64: $rrps req/s, p50 $rp50 ms, p99 $rp99 ms"

# ---------- failover: kill -9 the leader, time to the first acknowledged write via a survivor ----------
first_ack() { # url method body
  local start; start=$(now_ms)
  for _ in $(seq 1 600); do
    if curl -fsS -m 2 -o /dev/null -X "$2" ${3:+-d "$3"} "$1" 2>/dev/null; then echo $(( $(now_ms) - start )); return; fi
    sleep 0.01
  done
  echo 60000
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
pc_times=(); etcd_times=()
for run in $(seq 1 "$RUNS"); do
  # PiCloud
  L="$(leader_http)"; li="${L: -1}"
  survivor=$(( li % 3 + 1 ))
  kill -9 "${PIDS[pc$li]}"; wait "${PIDS[pc$li]}" 2>/dev/null || true
  pc_times+=("$(first_ack "http://127.0.0.1:1808$survivor/kvbench/put/failover$run" POST)")
  start_picloud "$li"; wait_http "http://127.0.0.1:1808$li/_/health"
  sleep 2
  # etcd
  ei=""
  for _ in $(seq 1 100); do
    for i in 1 2 3; do
      st=$(curl -fsS -m 1 -X POST -d '{}' "http://127.0.0.1:2379$i/v3/maintenance/status" 2>/dev/null || true)
      [ -z "$st" ] && continue
      if python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s.get("leader") and s["leader"]==s["header"]["member_id"] else 1)' "$st"; then ei=$i; fi
    done
    [ -n "$ei" ] && break; sleep 0.1
  done
  es=$(( ei % 3 + 1 ))
  kill -9 "${PIDS[etcd$ei]}"; wait "${PIDS[etcd$ei]}" 2>/dev/null || true
  etcd_times+=("$(first_ack "http://127.0.0.1:2379$es/v3/kv/put" POST '{"key":"ZmFpbG92ZXI=","value":"MQ=="}')")
  start_etcd "$ei" existing
  sleep 3
done
echo "failover (kill -9 leader → first acked write via a survivor), $RUNS runs:"
echo "  picloud ms: ${pc_times[*]}  median $(printf '%s\n' "${pc_times[@]}" | median)"
echo "  etcd    ms: ${etcd_times[*]}  median $(printf '%s\n' "${etcd_times[@]}" | median)"
