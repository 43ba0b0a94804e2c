#!/usr/bin/env bash
# Documents (issue 5), measured through HTTP with wrk:
#  1. One node, 100,000 documents in `users`: docs.find by an equality the
#     unique `email` index serves vs the same lookup on `name`, which no index
#     covers (a collection scan); queries/s of each and their ratio.
#  2. Three nodes (loopback, fsync on): docs.insert into `users` with two
#     indexes (email unique, city+age), side by side with kv.set of the same
#     value through the same cluster; inserts/s and the ratio.
#
# Usage: bench/docs.sh [duration_seconds=10] [connections=16]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-16}"
DOCS=100000
WORK="$(mktemp -d /tmp/picloud-docs-bench.XXXXXX)"
declare -A PIDS=()
source bench/lib.sh
bench_setup
export PICLOUD_ADMIN_KEY="docs-bench-admin-key-0123456789abcdef" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"

# rps NAME URL_PREFIX -> "NAME rps p50 p99" (random n in 0..DOCS-1)
rps() {
  cat >"$WORK/$1.lua" <<LUA
request = function() return wrk.format("GET", "$2" .. math.random(0, $DOCS - 1)) end
LUA
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s "$WORK/$1.lua" "$PICLOUD_URL" >"$WORK/$1.txt"
  wrk_summary "$1" "$WORK/$1.txt"
}

# ---- 1. indexed equality vs collection scan, one node ----
HTTP_PORTS=1918 PEER_PORTS=1917
start_picloud 1
wait_http "http://127.0.0.1:${HTTP_PORTS}1/_/health"
export PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1"
"$BIN" deploy bench/apps/docbench >/dev/null
python3 - "$PICLOUD_URL" "$PICLOUD_KEY" "$DOCS" <<'PY'
import json, sys, urllib.request
url, key, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
for start in range(0, total, 1000):
    docs = [{"email": f"u{n}@x", "name": f"user {n}", "city": f"c{n % 50}", "age": n % 90}
            for n in range(start, min(total, start + 1000))]
    req = urllib.request.Request(url + "/_/api/v1/apps/docbench/docs/users",
        data=json.dumps({"docs": docs}).encode(), method="POST",
        headers={"authorization": "Bearer " + key, "content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
echo "# docs.find on $DOCS documents, one node, wrk -t2 -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
indexed=$(rps indexed-email /docbench/email/)
scan=$(rps scan-name /docbench/name/)
echo "$indexed"; echo "$scan"
python3 -c "import sys; a=float(sys.argv[1]); b=float(sys.argv[2]); print(f'indexed / scan: {a/b:.0f}x')" "$(echo "$indexed" | cut -d' ' -f2)" "$(echo "$scan" | cut -d' ' -f2)"
kill -9 "${PIDS[pc1]}"; unset 'PIDS[pc1]'

# ---- 2. inserts with two indexes vs kv.set, three nodes ----
HTTP_PORTS=1928 PEER_PORTS=1927
WORK="$WORK/cluster" && mkdir -p "$WORK"
start_three_picloud
export PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1"
"$BIN" deploy bench/apps/docbench >/dev/null
cat >"$WORK/post.lua" <<'LUA'
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", path_prefix .. "t" .. tid .. "-" .. counter)
end
LUA
writes() { # NAME PREFIX
  sed "s#path_prefix#\"$2\"#" "$WORK/post.lua" >"$WORK/$1.lua"
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/$1.lua" "$PICLOUD_URL" >"$WORK/$1.txt"
  wrk_summary "$1" "$WORK/$1.txt"
}
echo "# writes through the leader of 3 nodes, wrk -t2 -c$CONNECTIONS -d${DURATION}s"
inserts=$(writes docs-insert-2-indexes /docbench/insert/)
kvsets=$(writes kv-set /docbench/kv/)
echo "$inserts"; echo "$kvsets"
python3 -c "import sys; a=float(sys.argv[1]); b=float(sys.argv[2]); print(f'docs.insert / kv.set: {a/b:.2f}x')" "$(echo "$inserts" | cut -d' ' -f2)" "$(echo "$kvsets" | cut -d' ' -f2)"
