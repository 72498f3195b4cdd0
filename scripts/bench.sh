#!/usr/bin/env bash
# bench.sh -- strata against fuse-overlayfs and the kernel's overlayfs, side by
# side in one run, on the same layer directories (issue 4). `make bench` runs it.
# Needs root, /dev/fuse, the Debian and busybox fixtures
# (sudo make fixtures FIXTURES="busybox debian"), fuse-overlayfs and fio
# (installed from Debian's packages when missing).
#
# Layers: the Debian fixture image's extracted layers (imported into a
# throwaway store) plus one bench layer at the bottom holding bench/big.bin
# (1 GiB of random data) and bench/src (strata's source with its dependencies
# vendored); a fresh upper/work for every mount. Each workload group is run on
# a fresh mount of each system in turn (the order rotates between runs).
#
#   mount   mount command until it returns, 5 mounts per run (Debian image;
#           busybox for the size dependence); mount_ready: until a first stat
#           inside the mount has its answer
#   walk    find -type f | wc -l, then find -printf of size/mode/owner (an
#           lstat of every file), each after drop_caches (cold) and twice again
#           (warm, warm2);
#           daemon RSS after it (VmHWM, VmRSS) and 5 s after drop_caches
#   walkbig the same lstat walk of 100k empty files in 100 directories of the
#           bench layer, cold and warm, and the daemon's RSS after it
#   seq     dd bs=1M of the 1 GiB lower file, cold and warm
#   rand    fio randread bs=4k psync, buffered: 32 MiB after drop_caches, 512 MiB
#           with the file in the page cache (seconds = fio's io_bytes/bw)
#   cat     cat of every file under /usr (xargs), cold, warm and warm again
#   copyup  append one byte to each of 1000 lower files under /usr (names and
#           data warm); open(O_WRONLY)+close of the 1 GiB lower file (timed in
#           python); reference: cp --reflink=auto of it on the same disk
#   untar   tar -xf of a ~200 MB tarball (/usr/local/go's tree) into the mount,
#           sync (timed separately), rm -rf of it
#   build   go build of strata (vendored) with an empty GOCACHE in the mount,
#           the host's toolchain (the image has none), sources in the bench layer
#
# Environment:
#   BENCH_RUNS=5        runs per workload and system (medians are reported)
#   BENCH_QUICK=1       smoke run: 1 run, a 256 MiB file, a smaller tarball, 10k
#                       files in the big walk, no build (BENCH_ONLY=... to add it)
#   BENCH_FS="strata fuse-overlayfs kernel plain"   systems to run
#   BENCH_ONLY="mount walk walkbig seq rand cat copyup untar build"   workload groups
#   BENCH_OUT=DIR       also keep results.tsv and report.txt there
#   BENCH_DIR=/tmp      where the temporary directory is made; BENCH_KEEP=1 keeps it
#   STRATA_BIN=PATH     benchmark this binary (default: build the working tree)
#   BENCH_STRATA_OPTS=O extra -o options for strata (e.g. volatile: no syncs, as
#                       fuse-overlayfs never syncs a copy-up; the kernel and strata do)
#   BENCH_STRATA_REV=REV build this committed revision instead (git archive)
#   STRATA_FIXTURES     fixture cache (default /tmp/strata-fixtures)
#   BENCH_OPS=1         count the FUSE requests each workload sends to strata and
#                       fuse-overlayfs (perf stat of the tracepoint fuse:fuse_request_send)
#   BENCH_PERF=1        perf record -g the daemon in each measured command; the
#                       profiles go to $BENCH_OUT/perf (timings then carry perf's cost)
#   BENCH_STRACE=1      strace -c -f the daemon in each measured command; the syscall
#                       summaries go to $BENCH_OUT/strace (timings are then meaningless)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/bench/lib.sh"

if [ "$QUICK" = 1 ]; then RUNS=${BENCH_RUNS:-1}; else RUNS=${BENCH_RUNS:-5}; fi
FSES=${BENCH_FS:-"strata fuse-overlayfs kernel plain"}
if [ "$QUICK" = 1 ]; then
  WORKLOADS=${BENCH_ONLY:-"mount walk walkbig seq rand cat copyup untar"}
else
  WORKLOADS=${BENCH_ONLY:-"mount walk walkbig seq rand cat copyup untar build"}
fi
MOUNT_REPS=${BENCH_MOUNT_REPS:-5}

bench_checks
bench_tmp
[ "${BENCH_OPS:-0}" = 1 ] && ops_init
PERF_OUT=
if [ "${BENCH_PERF:-0}" = 1 ]; then
  command -v perf >/dev/null || die "BENCH_PERF=1: perf not found (apt-get install linux-perf)"
  [ -n "${BENCH_OUT:-}" ] || die "BENCH_PERF=1 needs BENCH_OUT=DIR for the profiles"
  PERF_OUT=$BENCH_OUT/perf
  mkdir -p "$PERF_OUT"
fi
STRACE_OUT=
if [ "${BENCH_STRACE:-0}" = 1 ]; then
  command -v strace >/dev/null || die "BENCH_STRACE=1: strace not found"
  [ -n "${BENCH_OUT:-}" ] || die "BENCH_STRACE=1 needs BENCH_OUT=DIR for the summaries"
  STRACE_OUT=$BENCH_OUT/strace
  mkdir -p "$STRACE_OUT"
fi
RESULTS=$BT/results.tsv
: >"$RESULTS"
START=$(date +%s)
bench_setup

# does workload group $1 apply to system $2?
applies() {
  case $2:$1 in
    plain:mount) return 1 ;;
  esac
  return 0
}

declare -A MOUNT_OPTS=()
read -r -a SYS <<<"$FSES"
for run in $(seq "$RUNS"); do
  # rotate the order of the systems from run to run
  order=()
  for i in "${!SYS[@]}"; do order+=("${SYS[$(((i + run - 1) % ${#SYS[@]}))]}"); done
  for w in $WORKLOADS; do
    for fs in "${order[@]}"; do
      applies "$w" "$fs" || continue
      CUR_FS=$fs CUR_RUN=$run
      log "run $run/$RUNS: $w on $fs (load $(loadavg))"
      record load "$w" "$(loadavg)"
      case $w in
        mount)
          for rep in $(seq "$MOUNT_REPS"); do
            for img in debian busybox; do
              new_run "$fs"
              if [ $img = debian ]; then mount_fs "$fs" "$DEB_LOWERS"; else mount_fs "$fs" "$BB_LOWERS"; fi
              record time "mount_$img" "$MOUNT_S"
              [ $img = debian ] && record time mount_ready_debian "$READY_S"
              stat "$M/etc/passwd" >/dev/null
              [ -n "${MOUNT_OPTS[$fs]:-}" ] || MOUNT_OPTS[$fs]=$(awk -v m="$M" '$2 == m { print $3, $4 }' /proc/mounts)
              umount_fs "$fs"
            done
          done
          ;;
        copyup)
          new_run "$fs"
          mount_fs "$fs"
          if [ "$fs" = plain ]; then w_cpref; else w_copyup; fi
          umount_fs "$fs"
          ;;
        walk | walkbig | seq | rand | cat | untar | build)
          new_run "$fs"
          mount_fs "$fs"
          "w_$w"
          umount_fs "$fs"
          ;;
        *) die "unknown workload group $w" ;;
      esac
    done
  done
done

{
  echo "strata benchmark (scripts/bench.sh), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - START )) s"
  echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "disk: $(df --output=source,fstype "$BT" | tail -1 | tr -s ' ') (layers, uppers, plain copy and tarball all on it)"
  # What a FUSE round trip costs depends on how an idle CPU is woken: on a
  # VM that halts its idle vCPUs, waking the daemon on the other one can
  # double it (README, Performance). Recorded, never changed.
  echo "wake-ups: cpuidle $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?'), guest_halt_poll_ns $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns 2>/dev/null || echo '-'), fuse.wake_here $(cat /sys/module/fuse/parameters/wake_here 2>/dev/null || echo '-'), fuse.enable_uring $(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null || echo '-')"
  echo "strata: $STRATA_REV; fuse-overlayfs: $(dpkg-query -W -f='${Version}' fuse-overlayfs 2>/dev/null); $(fio --version 2>/dev/null || echo 'fio: none, randread.py'); $(go version | cut -d' ' -f3)"
  echo "image: debian fixture, $(echo "$DEB_LOWERS" | tr ':' '\n' | wc -l) layers + bench layer; $IMG_FILES files, $IMG_DIRS dirs walked; /usr: $USR_FILES files, $USR_MB MiB"
  echo "inputs: big.bin $BIG_MB MiB; tarball $TAR_MB MiB, $TAR_FILES files; $COPYUP_FILES files appended to; $((MANY_DIRS * 1000)) files in the big walk; runs: $RUNS"
  echo "1-min load average before each workload: $(awk -F'\t' '$1 == "load" { print $5 }' "$RESULTS" | sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "min %s, median %s, max %s (2 cores; other users of the machine show here)", v[1], v[int((NR + 1) / 2)], v[NR] }')"
  for fs in "${!MOUNT_OPTS[@]}"; do echo "mount $fs: ${MOUNT_OPTS[$fs]}"; done | sort
  echo
  python3 "$HERE/bench/report.py" "$RESULTS"
} >"$BT/report.txt"
cat "$BT/report.txt"
if [ -n "${BENCH_OUT:-}" ]; then
  mkdir -p "$BENCH_OUT"
  cp "$RESULTS" "$BT/report.txt" "$BENCH_OUT/"
  log "results in $BENCH_OUT"
fi
