#!/usr/bin/env bash
# Backup and restore (issue 16), against the disk they run on, in one run:
#  1. One node fills its state with ~1 GB of kv values (60 KiB each, written
#     through the app route `POST /backupfill/fill/:n`: 16 kv.set per request,
#     8 requests at once, through Raft with fsync: the real write path) and
#     10,000 documents.
#  2. For each disk profile: the disk's fsynced write rate (dd conv=fsync of
#     1 GiB) and sequential read rate (dd of that file after dropping the
#     page cache); `picloud backup --out FILE` with FILE off the disk (tmpfs,
#     standing for the operator's machine or a USB stick) and on it (fsynced:
#     bound by the disk's write rate); `picloud restore FILE --data-dir DIR`
#     from the disk to the disk. The page cache is dropped before each. MB/s
#     of the backup file's size, and the ratios to the disk's rates.
#     Profiles: `raw` is the disk as it is (on a VM, often the host's page
#     cache: GB/s that no Pi has); `pi-ssd` (360 MB/s read, 300 MB/s write:
#     a USB 3 SSD on a Pi) and `pi-sd` (90 MB/s read, 40 MB/s write: an A2
#     SD card on a Pi 5) cap the same disk with the blkio (cgroup v1) or io
#     (cgroup v2) throttle, for dd, the node and the CLI alike.
# Targets: backup >= 0.5x sequential read, restore >= 0.3x fsynced write.
# Needs root (drop_caches, cgroups). Everything it writes is deleted at the end.
#
# Usage: bench/backup.sh [state_megabytes=1024] [profiles="raw pi-ssd pi-sd"]
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_MB="${1:-1024}"
PROFILES="${2:-raw pi-ssd pi-sd}"
WORK="$(mktemp -d /var/tmp/picloud-backup-bench.XXXXXX)"
OFF_DISK="$(mktemp -d /dev/shm/picloud-backup-bench.XXXXXX)"
CGROUP=""
declare -A PIDS=()
source bench/lib.sh
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK" "$OFF_DISK"
  if [ -n "$CGROUP" ] && [ -d "$CGROUP" ]; then
    # Anything left goes back to the root group; then ours goes.
    while read -r pid; do echo "$pid" >"$(dirname "$CGROUP")/cgroup.procs" 2>/dev/null || true; done <"$CGROUP/cgroup.procs"
    rmdir "$CGROUP" 2>/dev/null || true
  fi
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
# A node restarted since its state was written, as a Pi's usually is: every
# byte of the state is on the disk, none only in the node's memory (sled
# keeps what a scan reads: each profile starts with a restarted node).
restart_node() {
  kill -TERM "${PIDS[pc1]}"; wait "${PIDS[pc1]}" || true
  start_picloud 1
  wait_http "http://127.0.0.1:${HTTP_PORTS}1/_/health"
}

# ---- 2. per disk profile: the disk, then backup and restore ----
# The whole disk under $WORK (a partition's parent), for the throttle.
device=$(findmnt -no SOURCE --target "$WORK")
parent=$(lsblk -ndo PKNAME "$device" 2>/dev/null || true)
[ -n "$parent" ] && device="/dev/$parent"
majmin=$(lsblk -ndo MAJ:MIN "$device" | tr -d ' ')

# The group every measurement runs in (the node too), if cgroups allow.
if [ -d /sys/fs/cgroup/blkio ]; then
  CGROUP=/sys/fs/cgroup/blkio/picloud-backup-bench
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo +io >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
  CGROUP=/sys/fs/cgroup/picloud-backup-bench
fi
[ -n "$CGROUP" ] && mkdir -p "$CGROUP"

# throttle READ_BPS WRITE_BPS: caps the calling (sub)shell and the node;
# with no arguments, lifts the caps.
throttle() {
  case "$CGROUP" in
    */blkio/*)
      echo "$majmin ${1:-0}" >"$CGROUP/blkio.throttle.read_bps_device"
      echo "$majmin ${2:-0}" >"$CGROUP/blkio.throttle.write_bps_device" ;;
    ?*) echo "$majmin rbps=${1:-max} wbps=${2:-max}" >"$CGROUP/io.max" ;;
    *) echo "no blkio/io cgroup controller: cannot emulate a Pi's disk" >&2; return 1 ;;
  esac
  echo "$BASHPID" >"$CGROUP/cgroup.procs"
  echo "${PIDS[pc1]}" >"$CGROUP/cgroup.procs"
}

measure() { # profile
  local write_ms read_ms start backup_ms restore_ms size
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

  # Off this disk first (tmpfs stands for the operator's machine or another
  # disk: the node reads its state from the disk), then onto it (the file
  # the restore reads; bound by the disk's write rate, the state now in the
  # node's memory).
  drop_caches
  start=$(now_ms)
  "$BIN" backup --out "$OFF_DISK/state.picbak" >"$WORK/backup.out"
  off_ms=$(( $(now_ms) - start ))
  rm -f "$OFF_DISK/state.picbak"
  drop_caches
  start=$(now_ms)
  "$BIN" backup --out "$WORK/state.picbak" >"$WORK/backup.out"
  backup_ms=$(( $(now_ms) - start ))
  size=$(stat -c %s "$WORK/state.picbak")
  off_rate=$(mb_per_s "$size" "$off_ms")
  backup_rate=$(mb_per_s "$size" "$backup_ms")
  drop_caches
  start=$(now_ms)
  "$BIN" restore "$WORK/state.picbak" --data-dir "$WORK/restored" >/dev/null
  restore_ms=$(( $(now_ms) - start ))
  restore_rate=$(mb_per_s "$size" "$restore_ms")
  rm -rf "$WORK/restored" "$WORK/state.picbak"
  echo "[$1] disk: fsynced write ${write_rate} MB/s, sequential read ${read_rate} MB/s (dd, 1 GiB)"
  echo "[$1] backup of $size bytes: to another disk ${off_ms} ms = ${off_rate} MB/s, to this disk ${backup_ms} ms = ${backup_rate} MB/s"
  echo "[$1] restore from this disk: ${restore_ms} ms = ${restore_rate} MB/s"
  python3 - "$1" "$off_rate" "$backup_rate" "$read_rate" "$restore_rate" "$write_rate" <<'PY'
import sys
profile = sys.argv[1]
off, backup, read, restore, write = map(float, sys.argv[2:])
print(f"[{profile}] backup / sequential read: {off / read:.2f} to another disk, {backup / read:.2f} to this one (target >= 0.5); restore / fsynced write: {restore / write:.2f} (target >= 0.3)")
PY
}

for profile in $PROFILES; do
  restart_node
  case "$profile" in
    raw) ( (throttle || true) && measure raw ) ;;
    pi-ssd) (throttle 360000000 300000000 && measure pi-ssd) ;;
    pi-sd) (throttle 90000000 40000000 && measure pi-sd) ;;
    *) echo "unknown disk profile $profile (raw, pi-ssd, pi-sd)" >&2; exit 2 ;;
  esac
done
