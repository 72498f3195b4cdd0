#!/usr/bin/env bash
# make-sample-image.sh [OUT]  -- rebuild the sample image bundled for the demo
# (default OUT: testdata/sample-image.tar, must stay under 2 MB).
#
# A small REAL image, made by real tools from Debian's packages the way
# ../shared/fixtures does it: buildah (private store, overlay driver, so that a
# deletion becomes a real whiteout and a removed+recreated dir a real opaque
# dir), busybox-static as the content, and an OCI archive (a tar of an OCI
# image layout, gzip layers) as the output. Two layers:
#   1. busybox with its applet symlinks, /etc basics, /srv/demo with files
#   2. modifies /srv/demo/message.txt and /etc/motd, deletes
#      /srv/demo/obsolete.txt (whiteout), replaces /srv/demo/cache/ (opaque dir)
#      and adds /srv/demo/added.txt
# Timestamps are pinned (SOURCE_DATE_EPOCH) so a rebuild gives the same image.
# Needs root; installs its tools with apt-get when missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=${1:-$REPO/testdata/sample-image.tar}
EPOCH=${SOURCE_DATE_EPOCH:-1767225600}   # 2026-01-01T00:00:00Z
MAX_BYTES=$((2 * 1024 * 1024))

log() { printf '[sample-image] %s\n' "$*" >&2; }
die() { printf 'FATAL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (buildah with a private store, mknod, chown)"
missing=()
for pair in buildah:buildah skopeo:skopeo busybox:busybox-static jq:jq; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
BB=/bin/busybox
case "$(ldd "$BB" 2>&1 || true)" in
  *"not a dynamic"*|*"statically linked"*) ;;
  *) die "$BB is not static (install busybox-static)";;
esac

WORK=$(mktemp -d /tmp/strata-sample.XXXXXX)
bah() { buildah --root "$WORK/store/root" --runroot "$WORK/store/run" --storage-driver overlay "$@"; }
cleanup() {
  bah umount --all >/dev/null 2>&1 || true
  bah rmi --all --force >/dev/null 2>&1 || true
  local mp
  for mp in $(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

IMG=localhost/strata/sample
stamp() { find "$1" -xdev -exec touch -h -d "@$EPOCH" {} +; }
commit() { # commit TAG "created_by"
  bah config --created-by "$2" "$C"
  bah commit --quiet --format oci --timestamp "$EPOCH" --rm "$C" "$IMG:$1" >/dev/null
}

log "layer 1: busybox + applet symlinks + /etc + /srv/demo"
C=$(bah from --quiet --pull-never scratch); M=$(bah mount "$C")
(
  cd "$M"
  mkdir -p bin sbin usr/bin usr/sbin etc root tmp proc sys dev var/log home srv/demo/cache
  cp "$BB" bin/busybox
  for a in $("$BB" --list-full); do
    [ "$a" = bin/busybox ] && continue
    case $a in
      bin/*)  ln -sf busybox "$a" ;;
      sbin/*) ln -sf ../bin/busybox "$a" ;;
      *)      ln -sf /bin/busybox "$a" ;;
    esac
  done
  chmod 0700 root; chmod 1777 tmp
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > etc/passwd
  printf 'root:x:0:\nnogroup:x:65534:\n' > etc/group
  echo strata-sample > etc/hostname
  echo "strata sample image, layer 1" > etc/motd
  echo "hello from layer 1" > srv/demo/message.txt
  echo "this file is deleted by layer 2" > srv/demo/obsolete.txt
  echo "layer 1 wrote this and nothing changes it" > srv/demo/keep.txt
  echo "stale entry, hidden when layer 2 makes cache/ opaque" > srv/demo/cache/stale.txt
  stamp .
)
bah config --cmd /bin/sh --env PATH=/usr/sbin:/usr/bin:/sbin:/bin --workingdir / \
  --label org.opencontainers.image.title=strata-sample "$C"
commit l1 "layer 1: busybox-static, applet symlinks, /etc, /srv/demo"

log "layer 2: modify, delete (whiteout), opaque dir, add"
C=$(bah from --quiet --pull-never "$IMG:l1"); M=$(bah mount "$C")
(
  cd "$M/srv/demo"
  echo "hello from layer 2 (this file was changed by the second layer)" > message.txt
  rm obsolete.txt
  rm -rf cache; mkdir cache; echo "fresh entry from layer 2" > cache/fresh.txt
  echo "added by layer 2" > added.txt
  echo "strata sample image, layer 2" > "$M/etc/motd"
  # pin only what changed: touching anything else would copy it into the layer
  touch -d "@$EPOCH" message.txt added.txt cache/fresh.txt cache . "$M/etc/motd" "$M/etc"
)
commit latest "layer 2: modify message.txt and motd, delete obsolete.txt, replace cache/, add added.txt"

log "export oci-archive (gzip layers) -> $OUT"
mkdir -p "$(dirname "$OUT")"
tmpout="$WORK/sample-image.tar"
bah push --quiet "$IMG:latest" "oci:$WORK/layout:sample:latest"
# re-tar the layout with pinned names, order, owners and mtimes: byte-reproducible
tar -C "$WORK/layout" --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf "$tmpout" oci-layout index.json blobs

# sanity: two gzip layers, a whiteout and an opaque marker, size cap
mf=$(tar -xOf "$tmpout" index.json | jq -r '.manifests[0].digest'); mf=${mf#sha256:}
man=$(tar -xOf "$tmpout" "blobs/sha256/$mf")
[ "$(jq '.layers | length' <<<"$man")" = 2 ] || die "expected 2 layers"
jq -e '.layers | all(.mediaType | endswith("tar+gzip"))' <<<"$man" >/dev/null || die "layers are not gzip"
l2=$(jq -r '.layers[1].digest' <<<"$man"); l2=${l2#sha256:}
listing=$(tar -xOf "$tmpout" "blobs/sha256/$l2" | tar -tzf -)
grep -qx 'srv/demo/.wh.obsolete.txt' <<<"$listing" || die "layer 2 lacks the whiteout for obsolete.txt"
grep -qx 'srv/demo/cache/.wh..wh..opq' <<<"$listing" || die "layer 2 lacks the opaque marker for cache/"
size=$(stat -c %s "$tmpout")
[ "$size" -lt "$MAX_BYTES" ] || die "sample image is $size bytes (cap $MAX_BYTES)"
mv "$tmpout" "$OUT"
log "wrote $OUT ($size bytes)"
