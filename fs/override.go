package fs

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// OverrideXattr holds the owner, mode and type an unprivileged user could
// not give a file on disk: "UID:GID:MODE[:TYPE]", MODE in octal, TYPE one of
// file, dir, symlink, pipe, socket, block-MAJ-MIN, char-MAJ-MIN. It is the
// format containers/storage writes for rootless layers and fuse-overlayfs
// reads (as user.containers.override_stat), so their stores and strata's can
// be read by each other.
const OverrideXattr = "user.containers.override_stat"

// override is a parsed OverrideXattr; zero means none.
type override struct {
	set      bool
	uid, gid uint32
	perm     uint32 // permission bits incl. setuid/setgid/sticky
	typ      uint32 // S_IFMT to present, 0 = the file's own
	rdev     uint64
}

func parseOverride(v string) (override, error) {
	f := strings.Split(strings.TrimRight(v, "\x00"), ":")
	if len(f) < 3 {
		return override{}, fmt.Errorf("override_stat %q: want UID:GID:MODE[:TYPE]", v)
	}
	uid, err1 := strconv.ParseUint(f[0], 10, 32)
	gid, err2 := strconv.ParseUint(f[1], 10, 32)
	mode, err3 := strconv.ParseUint(f[2], 8, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return override{}, fmt.Errorf("override_stat %q: bad number", v)
	}
	o := override{set: true, uid: uint32(uid), gid: uint32(gid), perm: uint32(mode) & 0o7777}
	if len(f) > 3 {
		t := f[3]
		switch {
		case t == "file", t == "dir", t == "symlink", t == "":
		case t == "pipe":
			o.typ = unix.S_IFIFO
		case t == "socket":
			o.typ = unix.S_IFSOCK
		case strings.HasPrefix(t, "char-"), strings.HasPrefix(t, "block-"):
			kind, nums, _ := strings.Cut(t, "-")
			maj, min, ok := strings.Cut(nums, "-")
			ma, e1 := strconv.ParseUint(maj, 10, 32)
			mi, e2 := strconv.ParseUint(min, 10, 32)
			if !ok || e1 != nil || e2 != nil {
				return override{}, fmt.Errorf("override_stat %q: bad device", v)
			}
			o.typ = unix.S_IFCHR
			if kind == "block" {
				o.typ = unix.S_IFBLK
			}
			o.rdev = unix.Mkdev(uint32(ma), uint32(mi))
		default:
			return override{}, fmt.Errorf("override_stat %q: unknown type %q", v, t)
		}
	}
	return o, nil
}

func (o override) String() string {
	s := fmt.Sprintf("%d:%d:0%o", o.uid, o.gid, o.perm)
	switch o.typ {
	case unix.S_IFIFO:
		s += ":pipe"
	case unix.S_IFSOCK:
		s += ":socket"
	case unix.S_IFCHR:
		s += fmt.Sprintf(":char-%d-%d", unix.Major(o.rdev), unix.Minor(o.rdev))
	case unix.S_IFBLK:
		s += fmt.Sprintf(":block-%d-%d", unix.Major(o.rdev), unix.Minor(o.rdev))
	}
	return s
}

// readOverride reads the override of dirfd/name ("" = dirfd itself).
func (u *unionFS) readOverride(dirfd int, name string) override {
	if !u.cfg.OverrideStat {
		return override{}
	}
	v, err := getxattrAll(dirfd, name, OverrideXattr)
	if err != nil {
		// what fuse-overlayfs -o xattr_permissions=2 writes (rootless.go)
		if v, err = getxattrAll(dirfd, name, fuseOverlayfsOverrideXattr); err != nil {
			return override{}
		}
	}
	o, err := parseOverride(string(v))
	if err != nil {
		u.log.Warnf("ignoring %s: %v", OverrideXattr, err)
		return override{}
	}
	return o
}

// writeOverride records o on dirfd/name ("" = dirfd itself).
func (u *unionFS) writeOverride(dirfd int, name string, o override) error {
	return setxattrAt(dirfd, name, OverrideXattr, []byte(o.String()), 0)
}

// apply presents the overridden owner, mode and type.
func (o override) apply(out *fuse.Attr) {
	if !o.set {
		return
	}
	out.Uid, out.Gid = o.uid, o.gid
	typ := out.Mode & unix.S_IFMT
	if o.typ != 0 {
		typ = o.typ
		out.Rdev = uint32(o.rdev)
	}
	out.Mode = typ | o.perm
}
