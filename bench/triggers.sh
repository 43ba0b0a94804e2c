#!/usr/bin/env bash
# Trigger throughput on a 3-node PiCloud cluster (loopback, fsync on): wrk
# writes `in/<key>` through the leader (bench/apps/trigbench); a kv trigger
# runs for each committed write and records the write time and its run's start
# in `out/<key>`. Prints completed runs/s (all runs, from the first write to an
# empty backlog) and p50/p99 of write → run start (the run's commit, one more
# batched Raft write, comes on top).
#
# Usage: bench/triggers.sh [duration_seconds=10] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
WORK="$(mktemp -d /tmp/picloud-trigger-bench.XXXXXX)"
declare -A PIDS=()
source bench/lib.sh
bench_setup
HTTP_PORTS=1908 PEER_PORTS=1907

export PICLOUD_ADMIN_KEY="trigger-bench-admin-key-0123456789" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"
start_three_picloud
export PICLOUD_URL=http://127.0.0.1:19081
"$BIN" deploy bench/apps/trigbench >/dev/null

# Keys unique across wrk threads (each thread numbers its own requests).
cat >"$WORK/put.lua" <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/trigbench/put/t" .. tid .. "-" .. counter)
end
LUA
started=$(now_ms)
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/put.lua" "$PICLOUD_URL" >"$WORK/wrk.txt"
backlog() { curl -fsS -H "authorization: Bearer $PICLOUD_KEY" "$PICLOUD_URL/_/api/v1/apps/trigbench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["trigger_backlog"])'; }
for _ in $(seq 1 6000); do [ "$(backlog)" = 0 ] && break; sleep 0.01; done
drained=$(now_ms)

python3 - "$PICLOUD_URL" "$PICLOUD_KEY" "$started" "$drained" "$WORK/wrk.txt" <<'PY'
import json, sys, urllib.parse, urllib.request
url, key, started, drained, wrk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def get(path):
    req = urllib.request.Request(url + path, headers={"authorization": "Bearer " + key})
    return json.load(urllib.request.urlopen(req))
lat, cursor = [], None
while True:
    path = "/_/api/v1/apps/trigbench/kv?prefix=out/&limit=1000"
    if cursor:
        path += "&cursor=" + urllib.parse.quote(cursor, safe="")
    page = get(path)
    lat += [item["value"]["r"] - item["value"]["w"] for item in page["items"]]
    cursor = page.get("cursor")
    if not cursor:
        break
lat.sort()
acked = next((line.split()[0] for line in open(wrk) if "requests in" in line), "?")
secs = (drained - started) / 1000
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] if lat else float("nan")
non2xx = next((line.split()[-1] for line in open(wrk) if "Non-2xx" in line), "0")
print(f"# trigger runs, 3 nodes, loopback: {secs:.1f}s from first write to empty backlog")
print(f"requests: {acked} ({non2xx} refused, e.g. outbox_full); runs completed: {len(lat)}")
print(f"completed runs/s: {len(lat) / secs:.0f}")
print(f"write -> run start ms: p50 {pct(0.50)} p99 {pct(0.99)} max {lat[-1] if lat else 'nan'}")
PY
