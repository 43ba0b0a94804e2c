#!/usr/bin/env bash
# Files (issue 14), side by side in one run, three PiCloud nodes on loopback
# (fsync on, one disk), nginx from Debian as the baseline:
#  1. Download, wrk -c16: a 100 MiB file, and 1,000 files of 64 KiB cycled,
#     through signed URLs on node 1 vs nginx serving the same files from disk
#     (sendfile on). MB/s, requests/s and the ratios (target >= 0.7).
#  2. Upload with 3 replicas: curl -T of UPLOAD_MIB through a signed PUT URL
#     on node 1 vs `dd conv=fsync` of the same bytes on the same disk (the
#     physical floor). MB/s and the ratio (target >= 0.3).
#  3. files.stat vs kv.get from a Lua route (same names), wrk -c16 (target >= 0.8).
#
# Usage: bench/files.sh [duration_seconds=15] [connections=16] [upload_mib=512]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
CONNECTIONS="${2:-16}"
UPLOAD_MIB="${3:-512}"
SMALL=1000
WORK="$(mktemp -d /tmp/picloud-files-bench.XXXXXX)"
declare -A PIDS=()
source bench/lib.sh
bench_setup
command -v nginx >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
trap 'for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
export PICLOUD_ADMIN_KEY="files-bench-admin-key-0123456789abcdef" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"

# The same bytes for both servers (nginx's workers are not root: they must
# be able to read them).
chmod 755 "$WORK"
mkdir -p "$WORK/www/small"
head -c $((100 << 20)) /dev/urandom >"$WORK/www/big.bin"
python3 - "$WORK/www/small" "$SMALL" <<'PY'
import os, sys
for n in range(int(sys.argv[2])):
    with open(os.path.join(sys.argv[1], str(n)), "wb") as f:
        f.write(os.urandom(64 * 1024))
PY

# ---- nginx ----
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:9182; root $WORK/www; }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"
NGINX_URL=http://127.0.0.1:9182

# ---- PiCloud, three nodes ----
HTTP_PORTS=1938 PEER_PORTS=1937
start_three_picloud
export PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1"
"$BIN" deploy bench/apps/filebench >/dev/null
"$BIN" files put filebench "$WORK/www/big.bin" big.bin >/dev/null
python3 - "$PICLOUD_URL" "$PICLOUD_KEY" "$WORK/www/small" "$SMALL" <<'PY'
import sys, urllib.request
url, key, root, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for n in range(count):
    body = open(f"{root}/{n}", "rb").read()
    req = urllib.request.Request(f"{url}/_/api/v1/apps/filebench/files/small/{n}", data=body,
        method="PUT", headers={"authorization": "Bearer " + key})
    urllib.request.urlopen(req).read()
for start in range(0, count, 100):
    urllib.request.urlopen(urllib.request.Request(f"{url}/filebench/seed/{start}", method="POST")).read()
PY
BIG_URL="$("$BIN" files url filebench big.bin --ttl 3600)"
curl -fsS "$PICLOUD_URL/filebench/urls/$SMALL" >"$WORK/small-urls.txt"

# Both servers must serve the same bytes before they are timed.
[ "$(curl -fsS "$BIG_URL" | sha256sum)" = "$(curl -fsS "$NGINX_URL/big.bin" | sha256sum)" ] || { echo "big.bin differs" >&2; exit 1; }

# mbps NAME FILE -> "NAME rps R MB/s M p99 P non2xx N" from wrk --latency output
mbps() {
  python3 - "$1" "$2" <<'PY'
import sys
name, text = sys.argv[1], open(sys.argv[2]).read()
rps = float(next(l.split()[1] for l in text.splitlines() if l.startswith("Requests/sec")))
t = next(l.split()[1] for l in text.splitlines() if l.startswith("Transfer/sec"))
unit = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}
mb = next(float(t[: -len(u)]) * f for u, f in sorted(unit.items(), key=lambda x: -len(x[0])) if t.endswith(u))
p99 = next((l.split()[1] for l in text.splitlines() if l.strip().startswith("99%")), "?")
bad = next((l.split()[-1] for l in text.splitlines() if "Non-2xx" in l), "0")
print(f"{name} rps {rps:.0f} MB/s {mb:.1f} p99 {p99} non2xx {bad}")
PY
}
# cycle NAME BASE PATHS_FILE: wrk cycling through the paths of PATHS_FILE
cycle() {
  python3 - "$3" >"$WORK/$1.lua" <<'PY'
import sys
from urllib.parse import urlsplit
paths = []
for line in open(sys.argv[1]):
    parts = urlsplit(line.strip())
    paths.append(parts.path + ("?" + parts.query if parts.query else ""))
print("local paths = {" + ",".join(repr(p).replace("'", '"') for p in paths) + "}")
print("local i = 0")
print("request = function() i = i % #paths + 1; return wrk.format('GET', paths[i]) end")
PY
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s "$WORK/$1.lua" "$2" >"$WORK/$1.txt"
  mbps "$1" "$WORK/$1.txt"
}
ratio() { python3 -c "import sys; print(f'{sys.argv[1]}: {float(sys.argv[2])/float(sys.argv[3]):.2f}x')" "$@"; }
field() { echo "$1" | awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }

echo "# files, 3 nodes on loopback, $(nproc) cores, wrk -t2 -c$CONNECTIONS -d${DURATION}s, $(date -u +%Y-%m-%dT%H:%MZ)"
# ---- 1. downloads ----
echo "$BIG_URL" >"$WORK/big-picloud.txt"; echo "$NGINX_URL/big.bin" >"$WORK/big-nginx.txt"
big_nginx=$(cycle big-nginx "$NGINX_URL" "$WORK/big-nginx.txt")
big_picloud=$(cycle big-picloud "$PICLOUD_URL" "$WORK/big-picloud.txt")
seq 0 $((SMALL - 1)) | sed "s#^#$NGINX_URL/small/#" >"$WORK/small-nginx.txt"
small_nginx=$(cycle small-nginx "$NGINX_URL" "$WORK/small-nginx.txt")
small_picloud=$(cycle small-picloud "$PICLOUD_URL" "$WORK/small-urls.txt")
printf '%s\n' "$big_nginx" "$big_picloud" "$small_nginx" "$small_picloud"
ratio "download 100 MiB, picloud / nginx (MB/s)" "$(field "$big_picloud" MB/s)" "$(field "$big_nginx" MB/s)"
ratio "download 1000 x 64 KiB, picloud / nginx (req/s)" "$(field "$small_picloud" rps)" "$(field "$small_nginx" rps)"

# ---- 2. upload with 3 replicas vs dd conv=fsync ----
head -c $((UPLOAD_MIB << 20)) /dev/urandom >"$WORK/payload"
rm -f "$WORK/www/big.bin" && rm -rf "$WORK/www/small"
start=$(now_ms); dd if="$WORK/payload" of="$WORK/dd.out" bs=1M conv=fsync status=none; dd_ms=$(( $(now_ms) - start ))
rm -f "$WORK/dd.out"
PUT_URL="$("$BIN" files url filebench upload.bin --put --ttl 3600)"
start=$(now_ms); curl -fsS -T "$WORK/payload" "$PUT_URL" >/dev/null; up_ms=$(( $(now_ms) - start ))
python3 - "$UPLOAD_MIB" "$dd_ms" "$up_ms" <<'PY'
import sys
mib, dd, up = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(f"dd conv=fsync {mib} MiB: {mib / (dd / 1000):.1f} MB/s")
print(f"picloud upload {mib} MiB, 3 replicas: {mib / (up / 1000):.1f} MB/s")
print(f"upload / dd: {dd / up:.2f}x")
PY

# ---- 3. files.stat vs kv.get ----
rnd() {
  cat >"$WORK/$1.lua" <<LUA
request = function() return wrk.format("GET", "$2" .. math.random(0, $SMALL - 1)) end
LUA
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s "$WORK/$1.lua" "$PICLOUD_URL" >"$WORK/$1.txt"
  wrk_summary "$1" "$WORK/$1.txt"
}
kvget=$(rnd kv-get /filebench/kv/)
stat=$(rnd files-stat /filebench/stat/)
echo "$kvget"; echo "$stat"
ratio "files.stat / kv.get" "$(echo "$stat" | cut -d' ' -f2)" "$(echo "$kvget" | cut -d' ' -f2)"
