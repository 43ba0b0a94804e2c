#!/usr/bin/env bash
# Side-by-side HTTP benchmark, one run, same machine:
#   axum hello-world (our stack's floor) | nginx + Lua (ngx.say) |
#   PiCloud examples/hello plain route   | PiCloud kv.incr route (fsynced Raft write)
# Prints requests/s, p50 and p99 for each and the ratios, then the idle RSS of a
# node with 10 deployed apps.
#
# Usage: bench/run.sh [duration_seconds=10] [connections=64]
# Needs root for apt-get (wrk, nginx, libnginx-mod-http-lua) on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
THREADS=2
WORK="$(mktemp -d /tmp/picloud-bench.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

need_packages=()
command -v wrk >/dev/null || need_packages+=(wrk)
command -v nginx >/dev/null || need_packages+=(nginx)
ls /usr/lib/nginx/modules/ndk_http_module.so /usr/share/nginx/modules/ndk_http_module.so >/dev/null 2>&1 \
  || [ -e /usr/share/nginx/modules-available/mod-http-lua.conf ] || need_packages+=(libnginx-mod-http-lua)
if [ "${#need_packages[@]}" -gt 0 ]; then
  echo "installing ${need_packages[*]} ..." >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

cargo build --release -q -p picloud -p picloud-bench
BIN=target/release

wait_http() { # url
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; return 1
}

# --- axum floor ---
"$BIN/axum-hello" 127.0.0.1:9101 >/dev/null & PIDS+=($!)

# --- nginx + lua ---
MODULES=""
for dir in /usr/lib/nginx/modules /usr/share/nginx/modules; do
  [ -f "$dir/ndk_http_module.so" ] && MODULES="load_module $dir/ndk_http_module.so; load_module $dir/ngx_http_lua_module.so;" && break
done
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx.conf" <<NGINX
$MODULES
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server {
    listen 127.0.0.1:9102;
    location /hello { default_type text/plain; content_by_lua_block { ngx.say("hello") } }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"

# --- PiCloud ---
export PICLOUD_ADMIN_KEY="bench-admin-key-0123456789"
"$BIN/picloud" serve --data-dir "$WORK/picloud" --http 127.0.0.1:9103 --peer 127.0.0.1:9104 \
  >"$WORK/picloud.log" 2>&1 & PICLOUD_PID=$!; PIDS+=($PICLOUD_PID)
wait_http http://127.0.0.1:9101/hello
wait_http http://127.0.0.1:9102/hello
wait_http http://127.0.0.1:9103/_/health
export PICLOUD_URL=http://127.0.0.1:9103 PICLOUD_KEY="$PICLOUD_ADMIN_KEY" PICLOUD_CREDENTIALS="$WORK/creds.toml"
"$BIN/picloud" deploy examples/hello >/dev/null
wait_http http://127.0.0.1:9103/hello/plain

# run_wrk NAME URL -> prints "NAME rps p50_ms p99_ms"
run_wrk() {
  local out
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$2")"
  local rps p50 p99 errors
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errors="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
  echo "$1 $rps $(to_ms "$p50") $(to_ms "$p99") ${errors:-0}"
}
to_ms() { # wrk prints 1.23ms / 456.00us / 1.2s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v/1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v*1000 }
    else printf "%s", v }'
}

echo "# wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
RESULTS="$WORK/results"
run_wrk axum-hello          http://127.0.0.1:9101/hello       >>"$RESULTS"
run_wrk nginx-lua           http://127.0.0.1:9102/hello       >>"$RESULTS"
run_wrk picloud-plain       http://127.0.0.1:9103/hello/plain >>"$RESULTS"
run_wrk picloud-kv-incr     http://127.0.0.1:9103/hello/greet/bench >>"$RESULTS"

printf '%-18s %12s %10s %10s %8s\n' target "req/s" "p50 ms" "p99 ms" non2xx
while read -r name rps p50 p99 errors; do
  printf '%-18s %12s %10s %10s %8s\n' "$name" "$rps" "$p50" "$p99" "$errors"
done <"$RESULTS"
rps_of() { awk -v n="$1" '$1==n {print $2}' "$RESULTS"; }
awk -v p="$(rps_of picloud-plain)" -v a="$(rps_of axum-hello)" -v n="$(rps_of nginx-lua)" -v k="$(rps_of picloud-kv-incr)" 'BEGIN {
  printf "ratio picloud-plain/axum-hello    %.2f  (target >= 0.5)\n", p/a
  printf "ratio picloud-plain/nginx-lua     %.2f  (target >= 0.8)\n", p/n
  printf "picloud kv.incr (fsynced raft)    %.0f req/s (target >= 5000 at c=64)\n", k
}'

# --- idle RSS with 10 apps (a fresh node, so the load above does not count) ---
kill "$PICLOUD_PID" 2>/dev/null || true
"$BIN/picloud" serve --data-dir "$WORK/idle" --http 127.0.0.1:9105 --peer 127.0.0.1:9106 \
  >"$WORK/idle.log" 2>&1 & IDLE_PID=$!; PIDS+=($IDLE_PID)
wait_http http://127.0.0.1:9105/_/health
export PICLOUD_URL=http://127.0.0.1:9105
for i in $(seq 1 10); do
  mkdir -p "$WORK/apps/app$i"
  sed "s/^name = \"hello\"/name = \"app$i\"/" examples/hello/picloud.toml >"$WORK/apps/app$i/picloud.toml"
  cp examples/hello/*.lua "$WORK/apps/app$i/"
  "$BIN/picloud" deploy "$WORK/apps/app$i" >/dev/null
  curl -fsS -o /dev/null "http://127.0.0.1:9105/app$i/plain"
  curl -fsS -o /dev/null "http://127.0.0.1:9105/app$i/greet/pi"
done
sleep 2
echo "idle RSS, fresh node with 10 deployed apps (each route called once): $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$IDLE_PID/status) (target <= 40 MB)"
