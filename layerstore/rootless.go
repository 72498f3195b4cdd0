package layerstore

import (
	"archive/tar"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Rootless stores. A plain user cannot give files other owners, create
// device nodes or set security.* and trusted.* xattrs. Layers extracted
// without privileges record what the image says in the format that
// containers/storage writes in rootless mode and fuse-overlayfs reads with
// xattr_permissions=2, so that each can read the other's layers:
//
//   - user.containers.override_stat = "UID:GID:0MODE:TYPE" on every regular
//     file and directory (the layer root too: fuse-overlayfs looks for it
//     there to know the layer uses it). TYPE is file, dir, pipe,
//     char-MAJ-MIN or block-MAJ-MIN: devices and fifos are empty regular
//     files that carry their type. The mode on disk keeps the daemon able to
//     read (files u+rw, directories u+rwx, no setuid/setgid/sticky).
//   - a privileged xattr NAME is stored as user.containers.override_NAME.
//
// Symlinks cannot carry user xattrs: they keep the importing user as owner.

// OverrideXattr is the rootless owner/mode/type record (fs.OverrideXattr).
const OverrideXattr = "user.containers.override_stat"

const overrideXattrPrefix = "user.containers.override_"

var (
	privOnce sync.Once
	priv     bool
)

// Privileged reports whether the process can chown, mknod and set trusted
// xattrs: euid 0 in the initial user namespace. Root inside a user namespace
// (rootless podman's mount program) is not.
func Privileged() bool {
	privOnce.Do(func() {
		priv = os.Geteuid() == 0 && !InUserNamespace()
	})
	return priv
}

// InUserNamespace reports whether the process runs in a user namespace other
// than the initial one.
func InUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}

// overrideValue formats an override record as containers/storage does.
func overrideValue(uid, gid int, mode uint32, typ string) string {
	return fmt.Sprintf("%d:%d:0%o:%s", uid, gid, mode&0o7777, typ)
}

// setOverride records v on dirfd/name (name "" is dirfd itself; dirfd may be
// an O_PATH fd), not following a symlink.
func (x *extractor) setOverride(dirfd int, name, v string) error {
	// The fd itself through its magic link (followed: it is the object),
	// an entry below it without following the entry.
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	set := unix.Setxattr
	if name != "" {
		p += "/" + name
		set = unix.Lsetxattr
	}
	if err := set(p, OverrideXattr, []byte(v), 0); err != nil {
		return fmt.Errorf("setxattr %s: %w", OverrideXattr, err)
	}
	return nil
}

// diskMode is the mode an entry gets on disk: the image's as root; without
// privileges one the daemon can always read (the image's is in the override).
func (x *extractor) diskMode(mode uint32, dir bool) uint32 {
	if x.root0 {
		return mode
	}
	if dir {
		return mode&0o777 | 0o700
	}
	return mode&0o777 | 0o600
}

// xattrName is the on-disk name of an image xattr.
func (x *extractor) xattrName(name string) string {
	if !x.root0 && (strings.HasPrefix(name, "security.") || strings.HasPrefix(name, "trusted.")) {
		return overrideXattrPrefix + name
	}
	return name
}

// whiteoutFile records a whiteout in the OCI form (.wh.NAME).
func (x *extractor) whiteoutFile(pfd int, name, target, dir string) error {
	fd, err := unix.Openat(pfd, ".wh."+target, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("%q: whiteout: %w", name, err)
	}
	unix.Close(fd)
	x.entries = append(x.entries, contentEntry{Path: strings.TrimPrefix(dir+"/"+target, "/"), Type: "w"})
	return nil
}

// specialFile stores a device or fifo without privileges: an empty regular
// file whose override gives its type, owner and mode.
func (x *extractor) specialFile(pfd int, name, base string, hdr *tar.Header, t string) error {
	typ := "pipe"
	switch t {
	case "c":
		typ = fmt.Sprintf("char-%d-%d", hdr.Devmajor, hdr.Devminor)
	case "b":
		typ = fmt.Sprintf("block-%d-%d", hdr.Devmajor, hdr.Devminor)
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("%q: create: %w", name, err)
	}
	defer unix.Close(fd)
	if err := x.setXattrsFD(fd, name, hdr); err != nil {
		return err
	}
	if err := x.setOverride(fd, "", overrideValue(hdr.Uid, hdr.Gid, tarMode(hdr), typ)); err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	e := x.entry(name, t, hdr)
	if t != "p" {
		e.Rdev = strconv.FormatInt(hdr.Devmajor, 10) + ":" + strconv.FormatInt(hdr.Devminor, 10)
	}
	x.entries = append(x.entries, e)
	return futimens(fd, atime(hdr), hdr.ModTime)
}

// markRoot gives the layer root an override when the tar had no entry for
// it (root:root 0755, as docker makes implied directories), so that readers
// that look for the override on the layer root (fuse-overlayfs) find it.
func (x *extractor) markRoot() error {
	if x.root0 {
		return nil
	}
	if _, ok := x.dirs[""]; ok {
		return nil
	}
	return x.setOverride(x.root, "", overrideValue(0, 0, 0o755, "dir"))
}

// applyOverride turns an entry of an unprivileged upper or layer into the
// tar header the image means: owner, mode and type from its override, and
// privileged xattrs under their own names. override is the entry's
// override record ("" when none); xs its other xattrs.
func applyOverride(hdr *tar.Header, override string, xs [][2]string) [][2]string {
	for i := range xs {
		if n, ok := strings.CutPrefix(xs[i][0], overrideXattrPrefix); ok && n != "stat" {
			xs[i][0] = n
		}
	}
	if override == "" {
		return xs
	}
	f := strings.Split(strings.TrimRight(override, "\x00"), ":")
	if len(f) < 3 {
		return xs
	}
	uid, err1 := strconv.Atoi(f[0])
	gid, err2 := strconv.Atoi(f[1])
	mode, err3 := strconv.ParseUint(f[2], 8, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return xs
	}
	hdr.Uid, hdr.Gid, hdr.Mode = uid, gid, int64(mode&0o7777)
	if len(f) > 3 && hdr.Typeflag == tar.TypeReg {
		t := f[3]
		switch {
		case t == "pipe":
			hdr.Typeflag, hdr.Size = tar.TypeFifo, 0
		case strings.HasPrefix(t, "char-"), strings.HasPrefix(t, "block-"):
			kind, nums, _ := strings.Cut(t, "-")
			ma, mi, _ := strings.Cut(nums, "-")
			maj, e1 := strconv.ParseInt(ma, 10, 64)
			min, e2 := strconv.ParseInt(mi, 10, 64)
			if e1 == nil && e2 == nil {
				hdr.Typeflag, hdr.Size = tar.TypeChar, 0
				if kind == "block" {
					hdr.Typeflag = tar.TypeBlock
				}
				hdr.Devmajor, hdr.Devminor = maj, min
			}
		}
	}
	return xs
}

// encodedXattr reports whether name is a privileged xattr stored by an
// unprivileged writer (not the override record itself).
func encodedXattr(name string) bool {
	return strings.HasPrefix(name, overrideXattrPrefix) && name != OverrideXattr
}

// overrideOf reads the override record of fd/name ("" is fd itself).
func overrideOf(fd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	get := unix.Getxattr
	if name != "" {
		p += "/" + name
		get = unix.Lgetxattr
	}
	buf := make([]byte, 128)
	n, err := get(p, OverrideXattr, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}
