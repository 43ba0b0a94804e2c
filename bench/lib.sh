# Shared by the bench scripts (sourced, not run). Needs BIN, WORK and an
# associative array PIDS; HTTP_PORTS / PEER_PORTS are port prefixes, node i
# listening on ${HTTP_PORTS}i and ${PEER_PORTS}i.

now_ms() { date +%s%3N; }

# The common start of a bench script: kill every started process on exit,
# install wrk if missing, build the release binary.
bench_setup() {
  trap 'for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
  command -v wrk >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
  cargo build --release -q -p picloud
  BIN=target/release/picloud
}

# wrk_summary NAME FILE -> "NAME rps p50 P p99 P non2xx N" from wrk --latency output
wrk_summary() {
  python3 - "$1" "$2" <<'PY'
import sys
name, text = sys.argv[1], open(sys.argv[2]).read()
rps = next(l.split()[1] for l in text.splitlines() if l.startswith("Requests/sec"))
lat = {l.split()[0]: l.split()[1] for l in text.splitlines() if l.strip().startswith(("50%", "99%"))}
bad = next((l.split()[-1] for l in text.splitlines() if "Non-2xx" in l), "0")
print(f"{name} {float(rps):.0f} p50 {lat.get('50%')} p99 {lat.get('99%')} non2xx {bad}")
PY
}
wait_http() { for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout: $1" >&2; return 1; }

# No secrets master key is configured: node 1 generates one in its data dir
# and the joiners receive it with their join, as the README's recipe does.
start_picloud() { # index [join args...]
  local i=$1; shift
  "$BIN" serve --data-dir "$WORK/pc$i" --http "127.0.0.1:${HTTP_PORTS}$i" --peer "127.0.0.1:${PEER_PORTS}$i" "$@" >>"$WORK/pc$i.log" 2>&1 &
  PIDS["pc$i"]=$!
}

# Node 1 creates the cluster, nodes 2 and 3 join through it; returns once
# both are followers.
start_three_picloud() {
  start_picloud 1
  wait_http "http://127.0.0.1:${HTTP_PORTS}1/_/health"
  local token n
  token="$(PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1" "$BIN" cluster token)"
  start_picloud 2 --join "127.0.0.1:${PEER_PORTS}1" --join-token "$token"
  start_picloud 3 --join "127.0.0.1:${PEER_PORTS}1" --join-token "$token"
  for _ in $(seq 1 300); do
    n=$(PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1" "$BIN" --json cluster status | grep -c '"role": "follower"' || true)
    [ "$n" = 2 ] && return 0; sleep 0.1
  done
  echo "the three nodes did not form a cluster" >&2; return 1
}
