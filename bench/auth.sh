#!/usr/bin/env bash
# End users (issue 15), one PiCloud node, side by side in one run:
#  1. Logins/s (wrk -c30 on a Lua route calling users.login) against argon2id
#     verifications/s with the same parameters on the same cores
#     (bench/src/argon2_rate.rs), the physical limit (target >= 0.9).
#  2. Another app's plain route, p99 idle and p99 while 30 clients hammer
#     login (target: loaded <= 2x idle), paced (the target) and saturated.
#  3. users.verify(token) from a Lua route, wrk -c16 (target >= 20,000/s).
#
# Usage: bench/auth.sh [duration_seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
WORK="$(mktemp -d /tmp/picloud-auth-bench.XXXXXX)"
declare -A PIDS=()
source bench/lib.sh
bench_setup
trap 'for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build --release -q -p picloud-bench --bin argon2-rate
export PICLOUD_ADMIN_KEY="auth-bench-admin-key-0123456789abcdef" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"
HTTP_PORTS=1958 PEER_PORTS=1957
start_picloud 1
export PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1"
wait_http "$PICLOUD_URL/_/health"
"$BIN" deploy bench/apps/authbench >/dev/null
"$BIN" deploy bench/apps/plainbench >/dev/null
# The bench user, and a fresh session token for /verify (the login runs
# below evict older sessions past auth_sessions_per_user_max).
session() { curl -fsS -X POST "$PICLOUD_URL/authbench/setup" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'; }
session >/dev/null
printf 'wrk.method = "POST"\n' >"$WORK/post.lua"
field() { echo "$1" | awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
to_ms() { python3 -c "import sys; v = sys.argv[1]; print({'us': 0.001, 'ms': 1, 's': 1000}[v.lstrip('0123456789.')] * float(v.rstrip('usm')))" "$1"; }
ratio() { python3 -c "import sys; print(f'{sys.argv[1]}: {float(sys.argv[2]) / float(sys.argv[3]):.2f}x')" "$@"; }

echo "# auth, one node, $(nproc) cores, ${DURATION}s each, $(date -u +%Y-%m-%dT%H:%MZ)"
# ---- 1. logins vs the raw hash rate ----
raw="$(target/release/argon2-rate "$DURATION" "$(nproc)")"
echo "$raw"
wrk -t2 -c30 -d"${DURATION}s" --timeout 10s --latency -s "$WORK/post.lua" "$PICLOUD_URL/authbench/login" >"$WORK/login.txt"
login="$(wrk_summary picloud-login "$WORK/login.txt")"
echo "$login"
ratio "logins/s / argon2id verifies/s" "$(echo "$login" | awk '{print $2}')" "$(field "$raw" "verifies/s")"

# ---- 2. another app's plain route, idle and under login load ----
# Paced: 4 connections, each waiting 2 ms between requests (~1,600 req/s,
# a twentieth of what the route serves flat out): the latency a user of
# the other app sees. Saturated: wrk flat out, where every core is the
# plain route's, so any other work (the logins' HTTP, Lua and log writes
# included) shows in its p99; printed for the record.
printf 'function delay() return 2 end\n' >"$WORK/paced.lua"
plain_p99() { # NAME [wrk script args...] -> prints the summary line
  local name=$1; shift
  wrk -t1 -c4 -d"${DURATION}s" --latency "$@" "$PICLOUD_URL/plainbench/hello" >"$WORK/$name.txt"
  wrk_summary "$name" "$WORK/$name.txt"
}
under_login_load() { # NAME [wrk script args...]
  wrk -t1 -c30 -d"$((DURATION + 2))s" --timeout 10s -s "$WORK/post.lua" "$PICLOUD_URL/authbench/login" >"$WORK/load.txt" &
  local load_pid=$!
  sleep 1 # the login load is running before the plain route is timed
  plain_p99 "$@"
  wait "$load_pid"
}
for mode in paced saturated; do
  args=(); [ "$mode" = paced ] && args=(-s "$WORK/paced.lua")
  idle="$(plain_p99 "plain-$mode-idle" "${args[@]}")"
  loaded="$(under_login_load "plain-$mode-under-login-load" "${args[@]}")"
  printf '%s\n%s\n' "$idle" "$loaded"
  ratio "plain p99 ($mode) under login load / idle" "$(to_ms "$(field "$loaded" p99)")" "$(to_ms "$(field "$idle" p99)")"
done

# ---- 3. users.verify ----
TOKEN="$(session)"
wrk -t2 -c16 -d"${DURATION}s" --latency -H "authorization: $TOKEN" "$PICLOUD_URL/authbench/verify" >"$WORK/verify.txt"
wrk_summary picloud-users.verify "$WORK/verify.txt"
