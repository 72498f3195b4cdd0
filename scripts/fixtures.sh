#!/usr/bin/env bash
# fixtures.sh [NAME...]  -- build the shared real-tool fixture images (default: busybox)
# into $STRATA_FIXTURES/NAME (default /tmp/strata-fixtures/NAME), once.
#
# A fixture is reused while its stamp file matches the sha256 of the generator
# scripts that made it; otherwise it is rebuilt. The generators live in
# ../shared/fixtures (beside the clone; read-only is fine: they are run with bash
# and write only under the output directory). Needs root (the generators do).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

log() { printf '[fixtures %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'FATAL: %s\n' "$*" >&2; exit 1; }

SHARED=${STRATA_SHARED:-}
if [ -z "$SHARED" ]; then
  for d in "$REPO/../shared" /work/shared; do
    [ -d "$d/fixtures" ] && { SHARED=$(cd "$d" && pwd); break; }
  done
fi
[ -n "$SHARED" ] && [ -d "$SHARED/fixtures" ] || die "cannot find shared/fixtures beside the repo (set STRATA_SHARED)"
CACHE=${STRATA_FIXTURES:-/tmp/strata-fixtures}

[ $# -gt 0 ] || set -- busybox
for name in "$@"; do
  gen="$SHARED/fixtures/make-$name-image.sh"
  [ -f "$gen" ] || die "no generator $gen"
  out="$CACHE/$name"
  stamp="$out/.strata-fixture-stamp"
  want=$(cat "$gen" "$SHARED/fixtures/lib.sh" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
     && [ -f "$out/$name-docker-archive.tar" ] && [ -d "$out/$name-reference/rootfs" ]; then
    log "$name: up to date in $out"
    continue
  fi
  [ "$(id -u)" = 0 ] || die "building the $name fixture needs root (sudo make fixtures)"
  log "$name: building into $out (log: $CACHE/$name.log)"
  mkdir -p "$out"
  rm -f "$stamp"
  start=$(date +%s)
  if ! bash "$gen" "$out" >"$CACHE/$name.log" 2>&1; then
    tail -30 "$CACHE/$name.log" >&2
    die "$name fixture failed (full log: $CACHE/$name.log)"
  fi
  printf '%s\n' "$want" >"$stamp"
  log "$name: built in $(( $(date +%s) - start )) s"
done
