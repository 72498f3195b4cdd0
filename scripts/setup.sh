#!/usr/bin/env bash
# setup.sh -- install everything strata's build, demo and tests use on a Debian
# machine (bookworm or later). Idempotent: installs only what is missing and runs
# `apt-get update` at most once. Needs root.
#
# Go 1.26 is expected at /usr/local/go (or on PATH); Debian's golang-go is too old.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf 'FATAL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: sudo ./scripts/setup.sh"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian"

# package: what uses it
PKGS=(
  fuse3           # fusermount3, /dev/fuse user space
  fuse-overlayfs  # interchange tests against a peer implementation
  attr            # getfattr/setfattr (fixtures, xattr tests)
  acl             # getfacl/setfacl (POSIX ACL tests)
  libcap2-bin     # setcap (fixtures: security.capability)
  skopeo          # fixtures and sample image: image format conversion
  umoci           # fixtures: reference unpack (the oracle)
  buildah         # fixtures and sample image: building real images
  busybox-static  # fixtures and sample image: the image content
  runc            # fixtures/runc-smoke.sh: run a container on a mounted image
  crun            # the other OCI runtime (podman's default; refused on hybrid cgroups)
  podman          # integration/podman_test.go: strata as containers/storage's mount_program
  uidmap          # newuidmap/newgidmap: rootless podman, user namespaces in the rootless tests
  slirp4netns     # rootless podman networking (the tests use --network none)
  python3         # fixtures/tree-manifest.py
  jq              # fixtures, demo, CI
  git make        # build
  tar gzip zstd   # archive handling in scripts
  util-linux      # mount, umount, findmnt
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  aptlog=/tmp/strata-setup-apt.log
  apt-get update >"$aptlog" 2>&1 || { tail -20 "$aptlog" >&2; die "apt-get update failed (log: $aptlog)"; }
  log "apt-get install ${missing[*]}"
  apt-get install -y --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1 \
    || { tail -20 "$aptlog" >&2; die "apt-get install failed (log: $aptlog)"; }
else
  log "all packages present"
fi

# /dev/fuse: load the module when the device node is missing.
if [ ! -c /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -c /dev/fuse ] || log "WARNING: /dev/fuse missing; mounts and integration tests will be skipped"
fi

GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
[ -n "$GO" ] || die "Go not found: install Go 1.26 to /usr/local/go"
log "Go: $("$GO" version)"
log "ready"
