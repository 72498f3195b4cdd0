# scripts/bench/lib.sh -- sourced by scripts/bench.sh and scripts/bench/profile.sh.
#
# Set-up of the shared inputs (store, layers, the 1 GiB file, the tarball, the
# build tree), mounting/unmounting each file system under test, and the
# workloads. Everything lives under $BT (one mktemp -d per invocation); the
# EXIT trap unmounts whatever is still mounted below $BT, stops the daemons
# this script started (by PID) and removes $BT.
#
# Systems: strata (-o lowerdir=...,upperdir=...,workdir=... form), fuse-overlayfs
# (same -o), kernel (mount -t overlay), plain (a plain directory holding a copy
# of the merged tree; the floor, where a workload applies to it).

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench: FATAL: %s\n' "$*" >&2; exit 1; }

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export PATH=$PATH:/usr/local/go/bin
FIXTURES=${STRATA_FIXTURES:-/tmp/strata-fixtures}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  BIG_MB=${BENCH_BIG_MB:-256}
  MANY_DIRS=${BENCH_MANY_DIRS:-10}
  TAR_PARTS=${BENCH_TAR_PARTS:-"src/net src/runtime"}
else
  BIG_MB=${BENCH_BIG_MB:-1024}
  MANY_DIRS=${BENCH_MANY_DIRS:-100}       # x 1000 empty files: the 100k-file walk
  # /usr/local/go: about 200 MB in about 14k files
  TAR_PARTS=${BENCH_TAR_PARTS:-"src test bin lib api"}
fi
RAND_COLD_MB=${BENCH_RAND_COLD_MB:-32}   # 8192 random 4 KiB reads after drop_caches
RAND_WARM_MB=${BENCH_RAND_WARM_MB:-512}  # 131072 random 4 KiB reads from the page cache
COPYUP_FILES=${BENCH_COPYUP_FILES:-1000}
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- clean-up
BT=
declare -a BENCH_PIDS=()

bench_mounts_below() { # mount points below $1, deepest first
  awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

bench_cleanup() {
  local rc=$? m pid i left
  trap - EXIT INT TERM
  ops_cleanup
  [ -n "$BT" ] && [ -d "$BT" ] || exit $rc
  if [ "$rc" != 0 ] && [ -s "${RESULTS:-}" ]; then
    # keep what was measured before the failure or signal
    local keep=${BENCH_OUT:-${BENCH_DIR:-/tmp}}
    mkdir -p "$keep"
    cp "$RESULTS" "$keep/results.partial.$$.tsv" &&
      printf 'bench: exit %s; the results so far are in %s (scripts/bench/report.py FILE)\n' \
        "$rc" "$keep/results.partial.$$.tsv" >&2
  fi
  for i in 1 2 3; do
    for m in $(bench_mounts_below "$BT"); do
      umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || true
    done
    [ -z "$(bench_mounts_below "$BT")" ] && break
    sleep 1
  done
  for m in $(bench_mounts_below "$BT"); do umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true; done
  for pid in "${BENCH_PIDS[@]}"; do
    [ -d "/proc/$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  left=$(bench_mounts_below "$BT")
  if [ -n "$left" ]; then
    printf 'bench: still mounted, %s kept:\n%s\n' "$BT" "$left" >&2
  elif [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "kept $BT (BENCH_KEEP=1)"
  else
    rm -rf --one-file-system "$BT"
  fi
  exit $rc
}

bench_tmp() {
  local base=${BENCH_DIR:-/tmp}
  BT=$(mktemp -d "$base/strata-bench.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir -p "$BT/bin" "$BT/runs"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---------------------------------------------------------------- set-up
bench_checks() {
  [ "$(id -u)" = 0 ] || die "needs root (mount, drop_caches): sudo make bench"
  [ -c /dev/fuse ] || die "/dev/fuse missing"
  local t
  for t in fuse-overlayfs fusermount3 jq python3 tar git go; do
    command -v $t >/dev/null || die "$t not found (sudo ./scripts/setup.sh installs it; Go at /usr/local/go)"
  done
  if ! command -v fio >/dev/null; then
    log "fio missing: apt-get install fio"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fio >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fio >/dev/null 2>&1; } ||
      log "fio not installable: random reads use scripts/bench/randread.py (pread loop)"
  fi
}

# Builds strata (unless STRATA_BIN), imports the Debian (and busybox) fixture,
# makes the bench layer, the tarball and the plain copy.
bench_setup() {
  local d
  local g=(git -C "$REPO" -c safe.directory='*')
  if [ -n "${STRATA_BIN:-}" ]; then
    STRATA=$STRATA_BIN
    STRATA_REV="given binary"
  elif [ -n "${BENCH_STRATA_REV:-}" ]; then
    # a committed revision, unaffected by edits in the working tree
    STRATA_REV=$("${g[@]}" rev-parse --short "$BENCH_STRATA_REV") || die "no revision $BENCH_STRATA_REV"
    log "building strata $STRATA_REV into $BT/bin"
    mkdir -p "$BT/strata-src"
    "${g[@]}" archive "$BENCH_STRATA_REV" | tar -x -C "$BT/strata-src"
    (cd "$BT/strata-src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -o "$BT/bin/strata" ./cmd/strata) || die "go build failed"
    rm -rf "$BT/strata-src"
    STRATA=$BT/bin/strata
  else
    STRATA_REV="$("${g[@]}" describe --always --dirty 2>/dev/null || echo unknown) (working tree)"
    log "building strata from $REPO (working tree) into $BT/bin"
    (cd "$REPO" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -o "$BT/bin/strata" ./cmd/strata) || die "go build failed"
    STRATA=$BT/bin/strata
  fi

  for d in debian busybox; do
    [ -f "$FIXTURES/$d/$d-oci/index.json" ] ||
      die "fixture $FIXTURES/$d/$d-oci missing: sudo make fixtures FIXTURES=\"busybox debian\""
  done
  log "importing the debian and busybox fixtures into $BT/store"
  "$STRATA" --root "$BT/store" --log-level warn import "$FIXTURES/debian/debian-oci" --tag bench/debian:latest >/dev/null
  "$STRATA" --root "$BT/store" --log-level warn import "$FIXTURES/busybox/busybox-oci" --tag bench/busybox:latest >/dev/null
  DEB_LOWERS=$("$STRATA" --root "$BT/store" inspect bench/debian:latest | jq -r .lowerdir)
  BB_LOWERS=$("$STRATA" --root "$BT/store" inspect bench/busybox:latest | jq -r .lowerdir)
  [ -n "$DEB_LOWERS" ] && [ "$DEB_LOWERS" != null ] || die "no lowerdir from strata inspect"

  # The bench layer, bottom-most: bench/big.bin and bench/src (a Go module
  # with its dependencies vendored, for the build workload).
  local L=$BT/layers/bench
  mkdir -p "$L/bench/src"
  log "bench layer: ${BIG_MB} MiB random file, vendored strata source"
  head -c "$((BIG_MB << 20))" /dev/urandom >"$L/bench/big.bin"
  log "bench layer: $((MANY_DIRS * 1000)) empty files in bench/many"
  local i
  for i in $(seq -w 0 $((MANY_DIRS - 1))); do
    mkdir -p "$L/bench/many/d$i"
    (cd "$L/bench/many/d$i" && touch f{000..999})
  done
  git -C "$REPO" -c safe.directory='*' archive HEAD | tar -x -C "$L/bench/src"
  (cd "$L/bench/src" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod vendor) || die "go mod vendor failed"
  LOWERS=$DEB_LOWERS:$L
  # what the walk covers: the image's tree (bench/ is pruned)
  log "untar input: tar of /usr/local/go {$TAR_PARTS}"
  # shellcheck disable=SC2086
  tar -C /usr/local/go -cf "$BT/untar.tar" $TAR_PARTS
  TAR_MB=$(( $(stat -c %s "$BT/untar.tar") >> 20 ))
  TAR_FILES=$(tar -tf "$BT/untar.tar" | grep -vc '/$')

  # The 1000 files to append to and the plain copy: from a read-only kernel
  # overlay of the lowers.
  local ro=$BT/ro
  mkdir -p "$ro"
  mount -t overlay overlay -o "ro,lowerdir=$LOWERS" "$ro"
  (cd "$ro" && find usr -type f ! -size 0 | sort | awk -v n="$COPYUP_FILES" 'NR <= n') >"$BT/copyup.list"
  IMG_FILES=$(cd "$ro" && find . -path ./bench -prune -o -type f -print | wc -l)
  IMG_DIRS=$(cd "$ro" && find . -path ./bench -prune -o -type d -print | wc -l)
  USR_FILES=$(cd "$ro" && find usr -type f | wc -l)
  USR_MB=$(( $(cd "$ro" && find usr -type f -printf '%s\n' | awk '{s+=$1} END {print s}') >> 20 ))
  if want plain; then
    log "plain copy of the merged tree (floor)"
    cp -a "$ro" "$BT/plain"
  fi
  umount "$ro"
  [ "$(wc -l <"$BT/copyup.list")" = "$COPYUP_FILES" ] || die "fewer than $COPYUP_FILES files under usr"
}

want() { [[ " $FSES " == *" $1 "* ]]; }

# ---------------------------------------------------------------- mounting
# new_run FS: a fresh directory with upper/work/mnt; sets D and M.
RUN_SEQ=0
new_run() {
  RUN_SEQ=$((RUN_SEQ + 1))
  D=$BT/runs/$RUN_SEQ-$1
  mkdir -p "$D/upper" "$D/work" "$D/mnt"
  M=$D/mnt
}

# daemon_pid DIR: the process whose argv holds DIR (the FUSE daemon serving it).
daemon_pid() {
  local p a
  local -a args
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    mapfile -d '' args <"$p/cmdline" 2>/dev/null || continue
    for a in "${args[@]}"; do
      if [ "$a" = "$1" ]; then
        case $(readlink "$p/exe" 2>/dev/null) in
          */strata | */fuse-overlayfs) echo "${p#/proc/}"; return 0 ;;
        esac
      fi
    done
  done
  return 1
}

# mount_fs FS [LOWERS]: mounts the fresh run directory; sets PID (empty for
# kernel/plain), MOUNT_S (seconds the mount command took) and READY_S (until
# a first stat inside the mount returned).
mount_fs() {
  local fs=$1 lowers=${2:-$LOWERS} t0 t1
  local opts="lowerdir=$lowers,upperdir=$D/upper,workdir=$D/work"
  PID= CONN=
  t0=$EPOCHREALTIME
  case $fs in
    strata) "$STRATA" -o "$opts${BENCH_STRATA_OPTS:+,$BENCH_STRATA_OPTS}" "$M" ;;
    fuse-overlayfs) fuse-overlayfs -o "$opts" "$M" ;;
    kernel) mount -t overlay overlay -o "$opts" "$M" ;;
    plain) rmdir "$M"; ln -s "$BT/plain" "$M" ;;
    *) die "unknown system $fs" ;;
  esac
  t1=$EPOCHREALTIME
  MOUNT_S=$(usdiff "$t0" "$t1")
  # Ready: a first stat inside has its answer. A FUSE mount command may
  # return before its daemon answers the kernel's INIT (fuse-overlayfs's
  # and strata's do); requests wait for it.
  stat "$M/." >/dev/null
  READY_S=$(usdiff "$t0" "$EPOCHREALTIME")
  if [ "$fs" != plain ]; then
    mountpoint -q "$M" || die "$fs: $M is not a mount point after mounting"
  fi
  CONN=
  case $fs in
    strata | fuse-overlayfs)
      PID=$(daemon_pid "$M") || die "$fs: no daemon found for $M"
      BENCH_PIDS+=("$PID")
      local mm
      mm=$(mountpoint -d "$M") # MAJOR:MINOR; the tracepoint has the kernel's dev_t
      CONN=$(((${mm%%:*} << 20) | ${mm##*:}))
      ;;
  esac
}

umount_fs() {
  local fs=$1 i
  if [ "$fs" = plain ]; then
    rm -f "$M"
  else
    for i in 1 2 3 4 5; do
      umount "$M" 2>/dev/null && break
      sleep 1
    done
    mountpoint -q "$M" && { umount -l "$M" || die "cannot unmount $M"; }
  fi
  if [ -n "$PID" ]; then
    for i in $(seq 100); do [ -d "/proc/$PID" ] || break; sleep 0.1; done
    [ -d "/proc/$PID" ] && log "WARNING: $fs daemon $PID still running after unmount"
  fi
  rm -rf --one-file-system "$D"
}

# ---------------------------------------------------------------- FUSE request counts
# BENCH_OPS=1: the kernel's fuse:fuse_request_send tracepoint, counted by
# `perf stat -a` with one filter per opcode on the mount's connection while a
# measured command runs. Counts what reaches the daemon, i.e. what the
# kernel's caches did not answer.
OPS=
ops_init() {
  command -v perf >/dev/null || die "BENCH_OPS=1: perf not found (apt-get install linux-perf)"
  perf list 2>/dev/null | grep -c 'fuse:fuse_request_send' >/dev/null ||
    die "BENCH_OPS=1: this kernel has no fuse:fuse_request_send tracepoint"
  OPS=1
}
ops_cleanup() { :; }
# ops_start: perf stat of every opcode on connection $CONN, in the background
ops_start() {
  local op args=()
  for op in "${!OPNAMES[@]}"; do
    [[ ${OPNAMES[$op]} =~ ^[A-Z] ]] || continue
    args+=(-e fuse:fuse_request_send --filter "connection == $CONN && opcode == $op")
  done
  perf stat -a -x, -o "$D/ops.csv" "${args[@]}" >/dev/null 2>&1 &
  OPS_PID=$!
  BENCH_PIDS+=("$OPS_PID")
  sleep 1 # counting
}
# ops_stop NAME: one "ops" result per opcode seen
ops_stop() {
  kill -INT "$OPS_PID" 2>/dev/null || true
  wait "$OPS_PID" 2>/dev/null || true
  local i=0 op n
  local -a ops=()
  for op in "${!OPNAMES[@]}"; do [[ ${OPNAMES[$op]} =~ ^[A-Z] ]] && ops+=("${OPNAMES[$op]}"); done
  while IFS=, read -r n _; do
    [[ $n =~ ^[0-9]+$ ]] || { [[ $n == "<not counted>" || $n == "<not supported>" ]] && i=$((i + 1)); continue; }
    [ "$n" -gt 0 ] && record ops "$1:${ops[$i]}" "$n"
    i=$((i + 1))
  done < <(grep -v '^#' "$D/ops.csv" | grep -v '^$')
  rm -f "$D/ops.csv"
}
OPNAMES=(0 LOOKUP FORGET GETATTR SETATTR READLINK SYMLINK 7 MKNOD MKDIR UNLINK RMDIR RENAME LINK OPEN
  READ WRITE STATFS RELEASE 19 FSYNC SETXATTR GETXATTR LISTXATTR REMOVEXATTR FLUSH INIT OPENDIR READDIR
  RELEASEDIR FSYNCDIR GETLK SETLK SETLKW ACCESS CREATE INTERRUPT BMAP DESTROY IOCTL POLL NOTIFY_REPLY
  BATCH_FORGET FALLOCATE READDIRPLUS RENAME2 LSEEK COPY_FILE_RANGE SETUPMAPPING REMOVEMAPPING SYNCFS
  TMPFILE STATX)
# ---------------------------------------------------------------- perf profiles
# BENCH_PERF=1: perf record -g of the daemon during each measured command;
# profiles (perf.data and two text reports) go to $BENCH_OUT/perf. Timings
# taken meanwhile carry perf's overhead.
perf_start() {
  PERF_DATA=$PERF_OUT/$1-$CUR_FS-r$CUR_RUN.data
  perf record -q -F "${BENCH_PERF_FREQ:-1999}" -g -p "$PID" -o "$PERF_DATA" >/dev/null 2>&1 &
  PERF_PID=$!
  BENCH_PIDS+=("$PERF_PID")
  sleep 1 # attached
}
perf_stop() {
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  local base=${PERF_DATA%.data}
  perf report -i "$PERF_DATA" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.7 \
    >"$base.self.txt" 2>/dev/null || true
  perf report -i "$PERF_DATA" --stdio --children --sort symbol -g none --percent-limit 3 \
    >"$base.children.txt" 2>/dev/null || true
}

# BENCH_STRACE=1: strace -c -f of the daemon during each measured command (the
# syscalls it makes per workload); summaries go to $BENCH_OUT/strace. Timings
# taken meanwhile carry strace's (large) overhead.
strace_start() {
  STRACE_TXT=$STRACE_OUT/$1-$CUR_FS-r$CUR_RUN.txt
  strace -c -f -qq -p "$PID" -o "$STRACE_TXT" &
  STRACE_PID=$!
  BENCH_PIDS+=("$STRACE_PID")
  sleep 1 # attached
}
strace_stop() {
  kill -INT "$STRACE_PID" 2>/dev/null || true
  wait "$STRACE_PID" 2>/dev/null || true
}

# ---------------------------------------------------------------- measuring
usdiff() { # seconds between two EPOCHREALTIME values
  local a=${1/./} b=${2/./} d
  d=$((10#$b - 10#$a))
  printf '%d.%06d' $((d / 1000000)) $((d % 1000000))
}

cpu_ticks() { # utime+stime of PID (all threads), 0 without a daemon
  [ -n "$PID" ] || { echo 0; return; }
  local s
  s=$(<"/proc/$PID/stat") || { echo 0; return; }
  s=${s##*) }
  local -a f
  read -r -a f <<<"$s"
  echo $((f[11] + f[12]))
}

# record KIND WORKLOAD VALUE [CPU_S]: one result line for the current system/run.
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$CUR_FS" "$CUR_RUN" "$3" "${4:-}" >>"$RESULTS"
}

# measure WORKLOAD CMD...: wall time of CMD and the daemon's CPU time meanwhile.
# MEASURED_S overrides the wall time when CMD sets it (fio's own figure).
measure() {
  local name=$1 t0 t1 c0 c1 wall
  shift
  [ -n "$OPS" ] && [ -n "$CONN" ] && ops_start
  [ -n "${PERF_OUT:-}" ] && [ -n "$PID" ] && perf_start "$name"
  [ -n "${STRACE_OUT:-}" ] && [ -n "$PID" ] && strace_start "$name"
  c0=$(cpu_ticks)
  MEASURED_S=
  t0=$EPOCHREALTIME
  "$@" || die "$CUR_FS: $name failed: $*"
  t1=$EPOCHREALTIME
  c1=$(cpu_ticks)
  [ -n "${STRACE_OUT:-}" ] && [ -n "$PID" ] && strace_stop
  [ -n "${PERF_OUT:-}" ] && [ -n "$PID" ] && perf_stop
  [ -n "$OPS" ] && [ -n "$CONN" ] && ops_stop "$name"
  wall=$(usdiff "$t0" "$t1")
  record time "$name" "${MEASURED_S:-$wall}" "$(awk -v t=$((c1 - c0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h }')"
}

rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------- workloads
# Each takes the mounted tree at $M.

wl_find() { find "$M/" -path "$M/bench" -prune -o -type f -print | wc -l >"$D/count.find"; }
wl_stat() { find "$M/" -path "$M/bench" -prune -o -type f -printf '%s %m %U %Y\n' | wc -l >"$D/count.stat"; }

w_walk() {
  drop_caches
  measure walk_find_cold wl_find
  measure walk_find_warm wl_find
  # Again: on a FUSE mount the first pass after a cold one refreshes each
  # directory's attributes (the kernel drops a directory's cached atime
  # when it reads its listing from the daemon, and find fstats it).
  measure walk_find_warm2 wl_find
  drop_caches
  measure walk_stat_cold wl_stat
  measure walk_stat_warm wl_stat
  measure walk_stat_warm2 wl_stat
  record info walk_files "$(cat "$D/count.find")"
  record info walk_stat_files "$(cat "$D/count.stat")"
  record_rss image
}

# record_rss TAG: the daemon's peak and current RSS, then its RSS 5 s after
# drop_caches made the kernel forget every inode.
record_rss() {
  [ -n "$PID" ] || return 0
  record mem "rss_peak_$1_MB" "$(awk -v k="$(rss_kb "$PID" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')"
  record mem "rss_after_$1_MB" "$(awk -v k="$(rss_kb "$PID" VmRSS)" 'BEGIN { printf "%.1f", k / 1024 }')"
  drop_caches
  sleep 5
  record mem "rss_forgot_$1_MB" "$(awk -v k="$(rss_kb "$PID" VmRSS)" 'BEGIN { printf "%.1f", k / 1024 }')"
}

wl_many() { find "$M/bench/many" -type f -printf '%s %m %U %Y\n' | wc -l >"$D/count.many"; }
w_walkbig() {
  drop_caches
  measure walk_many_stat_cold wl_many
  measure walk_many_stat_warm wl_many
  record info walk_many_files "$(cat "$D/count.many")"
  record_rss many
}

wl_dd() { dd if="$M/bench/big.bin" of=/dev/null bs=1M status=none; }
w_seq() {
  drop_caches
  measure seq_read_cold wl_dd
  measure seq_read_warm wl_dd
}

# fio's own run time (bytes / bandwidth), or the pread loop's when fio is missing.
wl_fio() {
  local mb=$1 out
  if command -v fio >/dev/null; then
    out=$(fio --name=rand4k --filename="$M/bench/big.bin" --readonly --rw=randread --bs=4k \
      --ioengine=psync --size="${BIG_MB}M" --io_size="${mb}M" --invalidate=0 --randrepeat=1 \
      --norandommap --output-format=json) || return 1
    MEASURED_S=$(jq -r '.jobs[0].read | (.io_bytes / .bw_bytes)' <<<"$out")
  else
    MEASURED_S=$(python3 "$REPO/scripts/bench/randread.py" "$M/bench/big.bin" $((mb << 8))) || return 1
  fi
}
w_rand() {
  drop_caches
  measure rand4k_cold wl_fio "$RAND_COLD_MB"
  cat "$M/bench/big.bin" >/dev/null
  measure rand4k_warm wl_fio "$RAND_WARM_MB"
}

wl_cat_usr() { find "$M/usr" -type f -print0 | xargs -0 cat >/dev/null; }
w_cat() {
  drop_caches
  measure cat_usr_cold wl_cat_usr
  measure cat_usr_warm wl_cat_usr
  # Again: the first pass after a cold one refreshes each file's attributes
  # on a FUSE mount (reading a file's data from the daemon, or through
  # passthrough, makes the kernel drop its cached atime; cat fstats it).
  measure cat_usr_warm2 wl_cat_usr
}

wl_append() {
  local f
  while IFS= read -r f; do
    printf x >>"$M/$f" || return 1
  done <"$BT/copyup.list"
}
# open(O_WRONLY) + close, timed inside python (no interpreter start-up).
wl_openw() {
  MEASURED_S=$(python3 -c '
import os, sys, time
t = time.perf_counter()
fd = os.open(sys.argv[1], os.O_WRONLY)
os.close(fd)
print("%.6f" % (time.perf_counter() - t))' "$1") || return 1
}
w_copyup() {
  # names and data warm, so that the copy-up itself is measured
  (cd "$M" && xargs -d '\n' cat <"$BT/copyup.list" >/dev/null)
  measure copyup_append_1000 wl_append
  sync
  cat "$M/bench/big.bin" >/dev/null
  measure copyup_open_1g wl_openw "$M/bench/big.bin"
  sync
  [ "$(stat -c %s "$M/bench/big.bin")" = "$((BIG_MB << 20))" ] || die "$CUR_FS: big.bin changed size"
}
# the reference for the 1 GiB copy-up: cp --reflink=auto on the same disk
wl_cp() { cp --reflink=auto "$BT/layers/bench/bench/big.bin" "$D/cp.bin"; }
wl_cp_fsync() { cp --reflink=auto "$BT/layers/bench/bench/big.bin" "$D/cp.bin" && sync "$D/cp.bin"; }
w_cpref() {
  cat "$BT/layers/bench/bench/big.bin" >/dev/null
  measure ref_cp_reflink_auto_1g wl_cp
  rm -f "$D/cp.bin"; sync
  measure ref_cp_reflink_auto_fsync_1g wl_cp_fsync
  rm -f "$D/cp.bin"; sync
}

wl_untar() { mkdir "$M/untar" && tar -xf "$BT/untar.tar" -C "$M/untar"; }
wl_rm() { rm -rf "$M/untar"; }
w_untar() {
  cat "$BT/untar.tar" >/dev/null
  sync
  measure untar wl_untar
  measure untar_sync sync
  [ "$(find "$M/untar" -type f | wc -l)" = "$TAR_FILES" ] || die "$CUR_FS: untar incomplete"
  measure rm_rf wl_rm
  sync
  [ ! -e "$M/untar" ] || die "$CUR_FS: rm -rf left $M/untar"
}

# go build of strata (vendored) with an empty GOCACHE inside the mount, the
# host's Go toolchain (the image has none); sources come from the bench layer.
wl_build() {
  (cd "$M/bench/src" && env GOCACHE="$M/bench/gocache" GOFLAGS="-mod=vendor -buildvcs=false" \
    GOTOOLCHAIN=local GOENV=off GOPROXY=off GOPATH="$M/bench/gopath" \
    go build -o "$M/bench/out/strata" ./cmd/strata)
}
w_build() {
  sync
  measure go_build wl_build
  [ -x "$M/bench/out/strata" ] || die "$CUR_FS: build produced no binary"
  rm -rf "$M/bench/gocache" "$M/bench/gopath" "$M/bench/out"
  sync
}
