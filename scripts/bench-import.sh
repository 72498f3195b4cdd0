#!/usr/bin/env bash
# make bench-import: strata import of the Debian fixture (docker-archive,
# uncompressed layers) into a cold store, next to `tar -x` of the same layer
# tars into the same disk and `umoci unpack` of the fixture's OCI layout.
# Median of BENCH_RUNS (default 5) runs each, caches dropped before each run.
# Prints MB/s (layer bytes / seconds) and the ratios; one machine-readable line
# `import strata_s tar_s tar_sync_s umoci_s`. Works only under its own mktemp -d.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/usr/local/go/bin
RUNS=${BENCH_RUNS:-5}
FIX=${STRATA_FIXTURES:-/tmp/strata-fixtures}
[ "$(id -u)" = 0 ] || { echo "bench-import: needs root (owners, devices, drop_caches)" >&2; exit 1; }
if [ ! -f "$FIX/debian/debian-docker-archive.tar" ]; then
  "$REPO/scripts/fixtures.sh" busybox debian >&2
fi
ARCHIVE=$FIX/debian/debian-docker-archive.tar
OCI=$FIX/debian/debian-oci-uncompressed
command -v umoci >/dev/null || { echo "bench-import: umoci missing (scripts/setup.sh)" >&2; exit 1; }
BT=$(mktemp -d /var/tmp/strata-bench-import.XXXXXX)
trap 'rm -rf "$BT"' EXIT
(cd "$REPO" && CGO_ENABLED=0 go build -o "$BT/strata" ./cmd/strata)
# The layer tars, as tar -x will read them.
mkdir -p "$BT/tars"
tar -C "$BT/tars" -xf "$ARCHIVE"
mapfile -t LAYERS < <(python3 -c '
import json,sys
m=json.load(open(sys.argv[1]+"/manifest.json"))[0]
print("\n".join(sys.argv[1]+"/"+l for l in m["Layers"]))' "$BT/tars")
BYTES=0
for l in "${LAYERS[@]}"; do BYTES=$((BYTES + $(stat -L -c %s "$l"))); done

timeit() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

run_strata() { rm -rf "$BT/store"; cold; timeit "$BT/strata" --root "$BT/store" --log-level error import "$ARCHIVE"; }
run_tar() {
  rm -rf "$BT/untar"; mkdir -p "$BT/untar"; cold
  local t0 t1 i=0; t0=$(date +%s.%N)
  for l in "${LAYERS[@]}"; do mkdir -p "$BT/untar/$i"; tar -C "$BT/untar/$i" --numeric-owner -xpf "$l"; i=$((i+1)); done
  t1=$(date +%s.%N); echo "$t1 - $t0" | bc
}
# strata makes each layer durable before it becomes visible (syncfs before
# the rename), so tar -x is also measured with a sync at the end.
run_tarsync() {
  rm -rf "$BT/untar"; mkdir -p "$BT/untar"; cold
  local t0 t1 i=0; t0=$(date +%s.%N)
  for l in "${LAYERS[@]}"; do mkdir -p "$BT/untar/$i"; tar -C "$BT/untar/$i" --numeric-owner -xpf "$l"; i=$((i+1)); done
  sync -f "$BT/untar"
  t1=$(date +%s.%N); echo "$t1 - $t0" | bc
}
run_umoci() { rm -rf "$BT/bundle"; cold; timeit umoci unpack --image "$OCI:latest" "$BT/bundle"; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A T
for sys in strata tar tarsync umoci; do
  vals=()
  for r in $(seq "$RUNS"); do vals+=("$(run_$sys)"); echo "[bench-import] $sys run $r: ${vals[-1]} s" >&2; done
  T[$sys]=$(printf '%s\n' "${vals[@]}" | median)
done
mb=$(echo "$BYTES / 1048576" | bc -l)
printf '\nimport of the Debian fixture (%.0f MB of layer tars, %d layers), median of %d runs, %s, %s\n' "$mb" "${#LAYERS[@]}" "$RUNS" "$(uname -r)" "$(date -u +%F)"
printf '%-8s %8s %8s\n' system seconds MB/s
for sys in strata tar tarsync umoci; do printf '%-8s %8.2f %8.1f\n' "$sys" "${T[$sys]}" "$(echo "$mb / ${T[$sys]}" | bc -l)"; done
printf 'strata/tar %.2f   strata/(tar+sync) %.2f   strata/umoci %.2f\n' "$(echo "${T[strata]} / ${T[tar]}" | bc -l)" \
  "$(echo "${T[strata]} / ${T[tarsync]}" | bc -l)" "$(echo "${T[strata]} / ${T[umoci]}" | bc -l)"
echo "import ${T[strata]} ${T[tar]} ${T[tarsync]} ${T[umoci]}"
