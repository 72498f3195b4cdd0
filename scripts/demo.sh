#!/usr/bin/env bash
# demo.sh -- import the bundled sample image into a throwaway store, mount it,
# look around, write into it, unmount, and remove the store.
#   STRATA=path/to/strata (default bin/strata; `make demo` builds it)
#   IMAGE=path/to/image.tar (default testdata/sample-image.tar)
# Needs root (mounting, and importing files owned by other users).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
STRATA=${STRATA:-$REPO/bin/strata}
IMAGE=${IMAGE:-$REPO/testdata/sample-image.tar}

die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (mount, image file owners): sudo make demo"
[ -x "$STRATA" ] || die "$STRATA not built: make build"
[ -f "$IMAGE" ] || die "$IMAGE missing"
[ -c /dev/fuse ] || die "/dev/fuse missing: modprobe fuse (and apt-get install fuse3)"

TMP=$(mktemp -d /tmp/strata-demo.XXXXXX)
STORE=$TMP/store MNT=$TMP/mnt UPPER=$TMP/upper
mkdir -p "$MNT"
mounted=0

mounted_here() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }
cleanup() {
  local rc=$?
  if [ "$mounted" = 1 ] && mounted_here; then
    echo "demo: cleaning up the mount at $MNT" >&2
    timeout 20 "$STRATA" umount "$MNT" 2>/dev/null \
      || timeout 10 fusermount3 -u "$MNT" 2>/dev/null \
      || timeout 10 umount "$MNT" 2>/dev/null \
      || umount -l "$MNT" 2>/dev/null || true
  fi
  if mounted_here; then
    echo "demo: $MNT is still mounted; leaving $TMP in place" >&2
  else
    rm -rf "$TMP"
  fi
  [ "$rc" = 0 ] || echo "demo: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# show CMD... -- print a command the way a user would type it, then run it.
show() {
  local shown=("$@")
  [ "${1:-}" = "$STRATA" ] && shown=(strata "${@:2}")
  shown=("${shown[@]//$TMP/\$TMP}")
  printf '\n$ %s\n' "${shown[*]//$REPO\//}"
  "$@"
}
st() { show "$STRATA" "$@"; }

# a throwaway store: every strata command below uses it
export STRATA_ROOT=$STORE
echo "strata demo: TMP=$TMP"
echo "\$ export STRATA_ROOT=\$TMP/store"

st import "$IMAGE" --tag sample:latest
st images
st mount sample:latest "$MNT" --upper "$UPPER"
mounted=1
mounted_here || die "strata mount returned but $MNT is not mounted"

printf '\n$ ls -l $TMP/mnt $TMP/mnt/bin | head -20\n'
ls -l "$MNT" "$MNT/bin" | head -20

echo; echo "# /srv/demo/message.txt was changed by the second layer:"
show cat "$MNT/srv/demo/message.txt"

echo; echo "# /srv/demo/obsolete.txt was deleted by the second layer (a whiteout), and cache/ replaced (opaque):"
show ls -la "$MNT/srv/demo" "$MNT/srv/demo/cache"
if [ -e "$MNT/srv/demo/obsolete.txt" ]; then die "obsolete.txt is visible: the whiteout did not work"; fi
echo "obsolete.txt: gone"

echo; echo "# writing: a new file, and an append to a file of the lower layers (copied up):"
show sh -c "echo 'written through the mount' > '$MNT/srv/demo/new.txt'"
show sh -c "echo 'appended through the mount' >> '$MNT/etc/motd'"
show cat "$MNT/srv/demo/new.txt" "$MNT/etc/motd"

echo; echo "# the image is a real root filesystem: busybox runs in it"
show chroot "$MNT" /bin/sh -c 'echo "hello from $(busybox | head -1 | cut -d" " -f1-2) inside the image"; ls /srv/demo'

if "$STRATA" help 2>&1 | grep -qE '^ +mounts\b'; then
  st mounts
fi

st umount "$MNT"
for _ in $(seq 50); do mounted_here || break; sleep 0.1; done
mounted_here && die "$MNT still mounted after strata umount"
mounted=0

echo; echo "# the writes live in the upper directory; the image's layers are unchanged:"
show find "$UPPER" -mindepth 1
echo; echo "demo: OK"
