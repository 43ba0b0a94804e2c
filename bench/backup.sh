#!/usr/bin/env bash
# Backup and restore (issue 16), against the disk they run on, in one run:
#  1. One node fills its state with ~1 GB of kv values (60 KiB each, written
#     through the app route `POST /backupfill/fill/:n`: 16 kv.set per request,
#     8 requests at once, through Raft with fsync: the real write path) and
#     10,000 documents.
#  2. The disk: fsynced write rate (dd conv=fsync of 1 GiB) and sequential
#     read rate (dd of that file after dropping the page cache).
#  3. `picloud backup --out FILE` (page cache dropped first) and
#     `picloud restore FILE --data-dir DIR` (page cache dropped first): MB/s
#     of the backup file's size, and the ratios to the disk's rates.
# Targets: backup >= 0.5x sequential read, restore >= 0.3x fsynced write.
# Needs root (drop_caches). Everything it writes is deleted at the end.
#
# Usage: bench/backup.sh [state_megabytes=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_MB="${1:-1024}"
WORK="$(mktemp -d /var/tmp/picloud-backup-bench.XXXXXX)"
declare -A PIDS=()
source bench/lib.sh
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
bench_setup
trap cleanup EXIT
export PICLOUD_ADMIN_KEY="backup-bench-admin-key-0123456789abcdef" PICLOUD_CREDENTIALS="$WORK/creds.toml"
export PICLOUD_KEY="$PICLOUD_ADMIN_KEY"
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
mb_per_s() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e6 / (int(sys.argv[2]) / 1000):.1f}')" "$1" "$2"; }

HTTP_PORTS=1938 PEER_PORTS=1937
start_picloud 1
wait_http "http://127.0.0.1:${HTTP_PORTS}1/_/health"
export PICLOUD_URL="http://127.0.0.1:${HTTP_PORTS}1"
"$BIN" deploy bench/apps/backupfill >/dev/null

# ---- 1. the state ----
start=$(now_ms)
python3 - "$PICLOUD_URL" "$PICLOUD_KEY" "$STATE_MB" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, key, state_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
per_request = 16 * 61440
requests = state_mb * 1024 * 1024 // per_request
def fill(n):
    req = urllib.request.Request(f"{url}/backupfill/fill/{n}?count=16&bytes=61440", data=b"", method="POST")
    for attempt in range(20):
        try:
            urllib.request.urlopen(req, timeout=60).read(); return
        except Exception as error:
            last = error
    raise last
with ThreadPoolExecutor(8) as pool:
    list(pool.map(fill, range(requests)))
for start in range(0, 10000, 1000):
    docs = [{"n": n, "name": f"user {n}", "city": f"c{n % 50}", "bio": "x" * 400} for n in range(start, start + 1000)]
    req = urllib.request.Request(url + "/_/api/v1/apps/backupfill/docs/people",
        data=json.dumps({"docs": docs}).encode(), method="POST",
        headers={"authorization": "Bearer " + key, "content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
fill_ms=$(( $(now_ms) - start ))
echo "# backup and restore, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), state filled through the app route in ${fill_ms} ms"
echo "data dir after the fill: $(du -sm "$WORK/pc1" | cut -f1) MB"

# ---- 2. the disk ----
start=$(now_ms)
dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=1024 conv=fsync status=none
write_ms=$(( $(now_ms) - start ))
drop_caches
start=$(now_ms)
dd if="$WORK/dd.bin" of=/dev/null bs=1M status=none
read_ms=$(( $(now_ms) - start ))
rm -f "$WORK/dd.bin"
write_rate=$(mb_per_s $((1024 * 1024 * 1024)) "$write_ms")
read_rate=$(mb_per_s $((1024 * 1024 * 1024)) "$read_ms")
echo "disk: fsynced write ${write_rate} MB/s, sequential read ${read_rate} MB/s (dd, 1 GiB)"

# ---- 3. backup and restore ----
drop_caches
start=$(now_ms)
"$BIN" backup --out "$WORK/state.picbak"
backup_ms=$(( $(now_ms) - start ))
size=$(stat -c %s "$WORK/state.picbak")
backup_rate=$(mb_per_s "$size" "$backup_ms")
kill -9 "${PIDS[pc1]}"; unset 'PIDS[pc1]'
drop_caches
start=$(now_ms)
"$BIN" restore "$WORK/state.picbak" --data-dir "$WORK/restored" >/dev/null
restore_ms=$(( $(now_ms) - start ))
restore_rate=$(mb_per_s "$size" "$restore_ms")
echo "backup: $size bytes in ${backup_ms} ms = ${backup_rate} MB/s"
echo "restore: $size bytes in ${restore_ms} ms = ${restore_rate} MB/s"
python3 - "$backup_rate" "$read_rate" "$restore_rate" "$write_rate" <<'PY'
import sys
backup, read, restore, write = map(float, sys.argv[1:])
print(f"backup / sequential read: {backup / read:.2f} (target >= 0.5)")
print(f"restore / fsynced write: {restore / write:.2f} (target >= 0.3)")
PY
