#!/usr/bin/env bash
# Files (issue 14), side by side in one run on three nodes (loopback, fsync on):
#  1. Download through node 1 with signed URLs vs nginx serving the same files
#     from disk (sendfile on, tcp_nopush on): one 100 MiB file, and 1,000
#     files of 64 KiB cycled by a wrk script; MB/s, requests/s, ratio (target
#     >= 0.7).
#  2. Upload of 512 MiB with 3 replicas (curl -T through node 1) vs
#     `dd conv=fsync` of the same bytes on the same disk (the physical
#     floor); MB/s and ratio (target >= 0.3).
#  3. files.stat vs kv.get from a Lua route (wrk); ratio (target >= 0.8).
#
# Usage: bench/files.sh [duration_seconds=15] [connections=16]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
CONNECTIONS="${2:-16}"
SMALL_FILES=1000
WORK="$(mktemp -d /tmp/picloud-files-bench.XXXXXX)"
declare -A PIDS=()
source bench/lib.sh
bench_setup
command -v nginx >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
trap 'for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; wait 2>/dev/null || true' EXIT
export PICLOUD_ADMIN_KEY="files-bench-admin-key-0123456789abcdef" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"

# The same bytes for nginx and PiCloud.
mkdir -p "$WORK/www/small"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$WORK/www/big.bin"
for n in $(seq 0 $((SMALL_FILES - 1))); do head -c 65536 /dev/urandom >"$WORK/www/small/$n.bin"; done
head -c $((512 * 1024 * 1024)) /dev/urandom >"$WORK/upload.bin"

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:19380; root $WORK/www; }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"

HTTP_PORTS=1938 PEER_PORTS=1937
start_three_picloud
export PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1"
"$BIN" deploy bench/apps/filebench >/dev/null
"$BIN" files put filebench "$WORK/www/big.bin" big.bin >/dev/null
for n in $(seq 0 $((SMALL_FILES - 1))); do
  "$BIN" files put filebench "$WORK/www/small/$n.bin" "small/$n.bin" >/dev/null
done

# wrk_bytes NAME FILE -> "NAME rps R MBps M non2xx N"
wrk_bytes() {
  python3 - "$1" "$2" <<'PY'
import sys
name, text = sys.argv[1], open(sys.argv[2]).read()
lines = text.splitlines()
rps = float(next(l.split()[1] for l in lines if l.startswith("Requests/sec")))
rate = next(l.split()[1] for l in lines if l.startswith("Transfer/sec"))
unit = {"B": 1e-6, "KB": 1.024e-3, "MB": 1.048576, "GB": 1073.741824}
number = rate.rstrip("KMGB")
mbps = float(number) * unit[rate[len(number):] or "B"]
bad = next((l.split()[-1] for l in lines if "Non-2xx" in l), "0")
print(f"{name} rps {rps:.0f} MBps {mbps:.1f} non2xx {bad}")
PY
}
field() { echo "$1" | awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
ratio() { python3 -c "import sys; print(f'{sys.argv[1]}: {float(sys.argv[2]) / float(sys.argv[3]):.2f}x (target >= {sys.argv[4]})')" "$@"; }

echo "# files, 3 nodes, wrk -t2 -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
# ---- 1. downloads ----
big_url="$("$BIN" files url filebench big.bin --ttl 3600)"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s "$big_url" >"$WORK/pc-big.txt"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s "http://127.0.0.1:19380/big.bin" >"$WORK/nginx-big.txt"
pc_big=$(wrk_bytes picloud-100MiB "$WORK/pc-big.txt"); nginx_big=$(wrk_bytes nginx-100MiB "$WORK/nginx-big.txt")
echo "$pc_big"; echo "$nginx_big"
ratio "100 MiB download picloud/nginx" "$(field "$pc_big" MBps)" "$(field "$nginx_big" MBps)" 0.7

{
  echo "local urls = {"
  for n in $(seq 0 $((SMALL_FILES - 1))); do
    echo "  \"$("$BIN" files url filebench "small/$n.bin" --ttl 3600 | sed "s#^$PICLOUD_URL##")\","
  done
  echo "}"
  echo 'local i = 0'
  echo 'request = function() i = i % #urls + 1; return wrk.format("GET", urls[i]) end'
} >"$WORK/pc-small.lua"
cat >"$WORK/nginx-small.lua" <<LUA
local i = 0
request = function() i = (i + 1) % $SMALL_FILES; return wrk.format("GET", "/small/" .. i .. ".bin") end
LUA
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/pc-small.lua" "$PICLOUD_URL" >"$WORK/pc-small.txt"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/nginx-small.lua" "http://127.0.0.1:19380" >"$WORK/nginx-small.txt"
pc_small=$(wrk_bytes picloud-64KiB "$WORK/pc-small.txt"); nginx_small=$(wrk_bytes nginx-64KiB "$WORK/nginx-small.txt")
echo "$pc_small"; echo "$nginx_small"
ratio "64 KiB downloads picloud/nginx" "$(field "$pc_small" rps)" "$(field "$nginx_small" rps)" 0.7

# ---- 2. upload with 3 replicas vs dd conv=fsync ----
put_url="$("$BIN" files url filebench upload.bin --put --ttl 3600)"
start=$(now_ms); curl -fsS -o /dev/null -T "$WORK/upload.bin" "$put_url"; pc_ms=$(( $(now_ms) - start ))
start=$(now_ms); dd if="$WORK/upload.bin" of="$WORK/dd.bin" bs=1M conv=fsync status=none; dd_ms=$(( $(now_ms) - start ))
pc_mbps=$(python3 -c "print(f'{512 / ($pc_ms / 1000):.1f}')"); dd_mbps=$(python3 -c "print(f'{512 / ($dd_ms / 1000):.1f}')")
echo "picloud-upload-512MiB-3-replicas MBps $pc_mbps"; echo "dd-conv-fsync-512MiB MBps $dd_mbps"
ratio "upload picloud/dd" "$pc_mbps" "$dd_mbps" 0.3

# ---- 3. files.stat vs kv.get from Lua ----
curl -fsS -o /dev/null -X POST "$PICLOUD_URL/filebench/seed"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$PICLOUD_URL/filebench/stat" >"$WORK/stat.txt"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$PICLOUD_URL/filebench/kv" >"$WORK/kv.txt"
stat=$(wrk_summary files.stat "$WORK/stat.txt"); kvget=$(wrk_summary kv.get "$WORK/kv.txt")
echo "$stat"; echo "$kvget"
ratio "files.stat/kv.get" "$(echo "$stat" | cut -d' ' -f2)" "$(echo "$kvget" | cut -d' ' -f2)" 0.8
