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

# st ARGS... -- print a strata command the way a user would type it, then run it.
st() {
  local shown=("$@")
  shown=("${shown[@]//$TMP\//}")
  shown=("${shown[@]//$REPO\//}")
  printf '\n$ strata %s\n' "${shown[*]}"
  "$STRATA" "$@"
}
# sh_in_tmp 'CMDLINE' -- print a shell command line, then run it in $TMP
# (so that the paths shown, mnt/… and upper/…, are the ones used).
sh_in_tmp() {
  printf '\n$ %s\n' "$1"
  (cd "$TMP" && bash -eu -c "$1")   # no pipefail: `| head` may SIGPIPE the writer
}

# a throwaway store: every strata command below uses it
export STRATA_ROOT=$STORE
echo "strata demo in TMP=$TMP (store: \$TMP/store, mount point: \$TMP/mnt, upper: \$TMP/upper)"
cd "$TMP"

st import "$IMAGE" --tag sample:latest
st images
st mount sample:latest "$MNT" --upper "$UPPER"
mounted=1
mounted_here || die "strata mount returned but $MNT is not mounted"

sh_in_tmp 'ls -l mnt mnt/bin | head -20'

echo; echo "# /srv/demo/message.txt was changed by the second layer:"
sh_in_tmp 'cat mnt/srv/demo/message.txt'

echo; echo "# /srv/demo/obsolete.txt was deleted by the second layer (a whiteout), and cache/ replaced (an opaque dir):"
sh_in_tmp 'ls -la mnt/srv/demo mnt/srv/demo/cache'
sh_in_tmp 'cat mnt/srv/demo/obsolete.txt || echo "obsolete.txt: gone, as it should be"'
if [ -e "$MNT/srv/demo/obsolete.txt" ]; then die "obsolete.txt is visible: the whiteout did not work"; fi

echo; echo "# writing: a new file, and an append to a file of the lower layers (copied up first):"
sh_in_tmp 'echo "written through the mount" > mnt/srv/demo/new.txt'
sh_in_tmp 'echo "appended through the mount" >> mnt/etc/motd'
sh_in_tmp 'cat mnt/srv/demo/new.txt mnt/etc/motd'

echo; echo "# the image is a real root filesystem: its busybox runs in it"
sh_in_tmp "chroot mnt /bin/sh -c 'busybox | head -1; ls /srv/demo'"

help=$("$STRATA" help 2>&1 || true)
if grep -qE '^ +mounts( |$)' <<<"$help"; then
  st mounts
fi

st umount "$MNT"
for _ in $(seq 50); do mounted_here || break; sleep 0.1; done
mounted_here && die "$MNT still mounted after strata umount"
mounted=0

echo; echo "# the writes live in the upper directory; the image's layers are unchanged:"
sh_in_tmp 'find upper -mindepth 1 | sort'
cd /
echo; echo "demo: OK"
