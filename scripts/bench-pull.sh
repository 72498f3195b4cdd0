#!/usr/bin/env bash
# bench-pull.sh -- strata pull against the two-step path users take today
# (skopeo copy docker://... oci:..., then umoci unpack), from a loopback
# registry into a cold store (issue 7). `make bench-pull` runs it.
# Needs root (umoci unpack and strata restore owners), the Debian fixture
# (sudo make fixtures FIXTURES="busybox debian"; built here when missing),
# skopeo, umoci, python3, bc and Debian's docker-registry (registry.sh
# installs it).
#
# The fixture's gzip OCI layout (debian-oci) is pushed once with skopeo to a
# docker-registry started with ../shared/fixtures/registry.sh in a temp dir.
# Each run, in turn (the order alternates between runs):
#   strata   strata pull REF into an empty store (download, verify, extract,
#            syncfs: the store is durable when it returns)
#   skopeo   skopeo copy docker://REF oci:DIR:latest into an empty dir
#   umoci    umoci unpack --image DIR:latest BUNDLE
#   sync     sync after umoci (its files are not durable until then)
# The registry's blobs are in the page cache after the push, for both. On
# loopback the download costs next to nothing, so each rate in BENCH_RATES
# other than 0 also runs both through a TCP proxy (python3, started here)
# that limits the registry-to-client direction to that many MB/s over all
# connections together: a network link.
#
# Environment:
#   BENCH_RUNS=3           runs per rate (medians and min/max are reported)
#   BENCH_RATES="0 40 12"  link rates in MB/s (12 is about 100 Mbit/s); 0 is the plain loopback
#   BENCH_IMAGE=debian     fixture image (debian or busybox)
#   BENCH_JOBS=4           strata pull --jobs
#   REGISTRY_PORT          port (default: 5055, or a free one when taken)
#   BENCH_DIR=/tmp         where the temporary directory is made; BENCH_KEEP=1 keeps it
#   BENCH_OUT=DIR          also keep results.tsv and report.txt there
#   STRATA_BIN=PATH        benchmark this binary (default: build the working tree)
#   STRATA_FIXTURES        fixture cache (default /tmp/strata-fixtures)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export PATH=$PATH:/usr/local/go/bin

log() { printf '[bench-pull %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'FATAL: %s\n' "$*" >&2; exit 1; }

RUNS=${BENCH_RUNS:-3}
RATES=${BENCH_RATES:-"0 40 12"}
IMAGE=${BENCH_IMAGE:-debian}
JOBS=${BENCH_JOBS:-4}
FIX=${STRATA_FIXTURES:-/tmp/strata-fixtures}
SHARED=${STRATA_SHARED:-}
if [ -z "$SHARED" ]; then
  for d in "$REPO/../shared" /work/shared; do
    [ -d "$d/fixtures" ] && { SHARED=$(cd "$d" && pwd); break; }
  done
fi
[ -n "$SHARED" ] || die "cannot find shared/fixtures beside the repo (set STRATA_SHARED)"
[ "$(id -u)" = 0 ] || die "bench-pull needs root (sudo make bench-pull)"
for tool in skopeo umoci python3 bc; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/setup.sh installs skopeo and umoci; apt-get install $tool)"
done

STRATA_FIXTURES=$FIX bash "$REPO/scripts/fixtures.sh" "$IMAGE"
LAYOUT=$FIX/$IMAGE/$IMAGE-oci
[ -f "$LAYOUT/index.json" ] || die "no $LAYOUT"

BT=$(mktemp -d "${BENCH_DIR:-/tmp}/strata-bench-pull.XXXXXX")
REGDIR=$BT/registry
PROXY_PID=
PORT=${REGISTRY_PORT:-5055}
cleanup() {
  if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; fi
  REGISTRY_PORT=$PORT bash "$SHARED/fixtures/registry.sh" stop "$REGDIR" >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $BT"; else rm -rf "$BT"; fi
}
trap cleanup EXIT
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${REGISTRY_PORT:-}" ] && ! port_free "$PORT"; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi

if [ -n "${STRATA_BIN:-}" ]; then
  BIN=$STRATA_BIN
else
  log "building strata"
  (cd "$REPO" && CGO_ENABLED=0 go build -buildvcs=false -o "$BT/strata" ./cmd/strata)
  BIN=$BT/strata
fi

mkdir -p "$REGDIR"
ADDR=$(REGISTRY_PORT=$PORT bash "$SHARED/fixtures/registry.sh" start "$REGDIR" 2>/dev/null | tail -1)
REF=$ADDR/bench/$IMAGE:1
log "pushing $LAYOUT to $REF with skopeo"
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:latest" "docker://$REF"
read -r NLAYERS BLOBBYTES < <(python3 - "$LAYOUT" <<'PY'
import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", *idx["manifests"][0]["digest"].split(":"))))
print(len(m["layers"]), sum(l["size"] for l in m["layers"]))
PY
)

RESULTS=$BT/results.tsv
: >"$RESULTS"
now() { date +%s.%N; }
record() { printf '%s\t%s\t%s\t%s\n' "$RATE" "$1" "$2" "$3" >>"$RESULTS"; }

run_strata() {
  local run=$1 store=$BT/store t0 t1
  rm -rf "$store"
  t0=$(now)
  "$BIN" --root "$store" --log-level warn pull "$SRC" --jobs "$JOBS" >/dev/null
  t1=$(now)
  record strata "$run" "$(echo "$t1 - $t0" | bc -l)"
  rm -rf "$store"
}

run_twostep() {
  local run=$1 oci=$BT/oci bundle=$BT/bundle t0 t1 t2 t3
  rm -rf "$oci" "$bundle"
  t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$SRC" "oci:$oci:latest"
  t1=$(now)
  umoci unpack --image "$oci:latest" "$bundle" >/dev/null 2>&1
  t2=$(now)
  sync
  t3=$(now)
  record skopeo "$run" "$(echo "$t1 - $t0" | bc -l)"
  record umoci "$run" "$(echo "$t2 - $t1" | bc -l)"
  record sync "$run" "$(echo "$t3 - $t2" | bc -l)"
  rm -rf "$oci" "$bundle"
}

# start_proxy MBPS: a TCP proxy to the registry whose registry-to-client
# direction is limited to MBPS MB/s over all connections; sets PROXY_PID
# and PPORT.
start_proxy() {
  local portfile=$BT/proxy.port
  : >"$portfile"
  python3 -u - "$PORT" "$1" >"$portfile" 2>"$BT/proxy.log" <<'PY' &
import asyncio, sys, time
upstream, rate = int(sys.argv[1]), float(sys.argv[2]) * 1e6
burst = max(rate * 0.02, 256 << 10)
state = {"t": time.monotonic(), "tokens": 0.0}

async def take(n, lock):
    async with lock:
        while True:
            now = time.monotonic()
            state["tokens"] = min(burst, state["tokens"] + (now - state["t"]) * rate)
            state["t"] = now
            if state["tokens"] >= n:
                state["tokens"] -= n
                return
            await asyncio.sleep((n - state["tokens"]) / rate)

async def pipe(r, w, lock):
    try:
        while True:
            data = await r.read(64 << 10)
            if not data:
                break
            if lock is not None:
                await take(len(data), lock)
            w.write(data)
            await w.drain()
        if w.can_write_eof():
            w.write_eof()
    except Exception:
        pass

async def main():
    lock = asyncio.Lock()
    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
        except Exception:
            cw.close()
            return
        await asyncio.gather(pipe(cr, uw, None), pipe(ur, cw, lock))
        uw.close()
        cw.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1])
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
PY
  PROXY_PID=$!
  for _ in $(seq 50); do [ -s "$portfile" ] && break; sleep 0.1; done
  [ -s "$portfile" ] || die "rate proxy did not start: $(cat "$BT/proxy.log")"
  PPORT=$(cat "$portfile")
}

for RATE in $RATES; do
  if [ "$RATE" = 0 ]; then
    SRC=$REF
    log "$RUNS runs: $IMAGE ($NLAYERS layers, $BLOBBYTES compressed bytes) from $ADDR (loopback)"
  else
    start_proxy "$RATE"
    SRC=127.0.0.1:$PPORT/bench/$IMAGE:1
    log "$RUNS runs: $IMAGE through a $RATE MB/s link (proxy 127.0.0.1:$PPORT, pid $PROXY_PID)"
  fi
  for run in $(seq "$RUNS"); do
    sync
    if [ $((run % 2)) = 1 ]; then run_strata "$run"; run_twostep "$run"; else run_twostep "$run"; run_strata "$run"; fi
    log "run $run: $(awk -F'\t' -v r="$run" -v q="$RATE" '$1==q && $3==r {printf "%s %.2fs  ", $2, $4}' "$RESULTS")"
  done
  if [ -n "$PROXY_PID" ]; then
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
  fi
done

REPORT=$BT/report.txt
python3 - "$RESULTS" "$IMAGE" "$NLAYERS" "$BLOBBYTES" "$JOBS" "$RUNS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$REPORT" <<'PY'
import sys, statistics, collections
res, image, nlayers, blobbytes, jobs, runs, ncpu, load = sys.argv[1:]
by_rate = collections.OrderedDict()
for line in open(res):
    rate, name, run, secs = line.rstrip("\n").split("\t")
    by_rate.setdefault(rate, collections.defaultdict(dict))[run][name] = float(secs)
print(f"pull of the {image} fixture ({nlayers} layers, {int(blobbytes)/1e6:.1f} MB gzip) from a docker-registry "
      f"on 127.0.0.1 into an empty store; {runs} runs; {ncpu} CPUs, load average {load} at the end")
for rate, per_run in by_rate.items():
    t = collections.defaultdict(list)
    for r in per_run.values():
        r["skopeo+umoci"] = r["skopeo"] + r["umoci"]
        r["skopeo+umoci+sync"] = r["skopeo+umoci"] + r["sync"]
        for k, v in r.items():
            t[k].append(v)
    print()
    print("loopback, no limit" if rate == "0" else f"through a {rate} MB/s link (rate-limiting proxy)")
    print(f"  {'':32}{'median s':>10}{'min':>8}{'max':>8}")
    for label, k in [("strata pull --jobs " + jobs, "strata"), ("skopeo copy (download only)", "skopeo"),
                     ("umoci unpack", "umoci"), ("sync after umoci", "sync"),
                     ("skopeo copy + umoci unpack", "skopeo+umoci"), ("  + sync", "skopeo+umoci+sync")]:
        v = t[k]
        print(f"  {label:32}{statistics.median(v):10.2f}{min(v):8.2f}{max(v):8.2f}")
    s, d = statistics.median(t["strata"]), statistics.median(t["skopeo"])
    two = statistics.median(t["skopeo+umoci+sync"])
    verdict = "faster than" if s < d else "slower than"
    print(f"  strata pull-and-extract takes {s/d:.2f}x the time of skopeo's download alone ({verdict} it); "
          f"skopeo + umoci + sync take {two/s:.2f}x strata's time")
PY
cat "$REPORT"
if [ -n "${BENCH_OUT:-}" ]; then
  mkdir -p "$BENCH_OUT"
  cp "$RESULTS" "$REPORT" "$BENCH_OUT/"
fi
