package fs

import (
	"strings"

	"golang.org/x/sys/unix"
)

// OverrideXattrPrefix holds, on an unprivileged daemon's layers, the
// xattrs only a privileged one could set (security.capability, trusted.*):
// "user.containers.override_security.capability" is presented as
// "security.capability", as fuse-overlayfs does with xattr_permissions=2.
const OverrideXattrPrefix = "user.containers.override_"

// encodeXattr gives the on-disk name of a privileged xattr set through an
// unprivileged mount.
func (u *unionFS) encodeXattr(name string) (string, bool) {
	if !u.cfg.OverrideStat || u.cfg.Raw {
		return "", false
	}
	if strings.HasPrefix(name, "security.") || strings.HasPrefix(name, "trusted.") && !strings.HasPrefix(name, "trusted.overlay.") {
		return OverrideXattrPrefix + name, true
	}
	return "", false
}

// decodeXattr is the reverse of encodeXattr for a name found on disk.
func (u *unionFS) decodeXattr(disk string) (string, bool) {
	if !u.cfg.OverrideStat || u.cfg.Raw || !strings.HasPrefix(disk, OverrideXattrPrefix) {
		return "", false
	}
	name := disk[len(OverrideXattrPrefix):]
	if _, ok := u.encodeXattr(name); ok {
		return name, true
	}
	return "", false
}

// markUpper gives an unprivileged mount's upper root the override of the
// top lower root when it has none: the mount's root directory then shows
// the image's owner and mode (not the daemon user's), and readers that look
// for the override on a layer root (fuse-overlayfs) know the upper uses it.
func (u *unionFS) markUpper() {
	if !u.cfg.OverrideStat || u.upper == nil || len(u.lowers) == 0 {
		return
	}
	if o := u.readOverride(u.upper.root, ""); o.set {
		return
	}
	o := u.readOverride(u.lowers[0].root, "")
	if !o.set {
		return
	}
	o.typ = 0
	if err := u.writeOverride(u.upper.root, "", o); err != nil {
		u.log.Warnf("upper %s: recording the root's owner: %v", u.upper.path, err)
	}
}

// fuse-overlayfs' own names: an unprivileged fuse-overlayfs marks opaque
// directories with user.fuseoverlayfs.opaque, and with xattr_permissions=2
// records owners in user.fuseoverlayfs.override_stat ("UID:GID:MODE", MODE
// with the type bits). Both are read, so an upper it wrote can be continued.
const (
	fuseOverlayfsPrefix        = "user.fuseoverlayfs."
	fuseOverlayfsOverrideXattr = fuseOverlayfsPrefix + "override_stat"
)

func (u *unionFS) fuseOverlayfsOpaque(fd int) bool {
	var b [4]byte
	sz, err := unix.Fgetxattr(fd, fuseOverlayfsPrefix+"opaque", b[:])
	return err == nil && sz == 1 && b[0] == 'y'
}

// ensureOverride gives a copied-up object an override when it came without
// one (from a layer that kept owners on disk, or in fuse-overlayfs' own
// xattr, which is not copied): fuse-overlayfs refuses upper entries of an
// override-keeping upper that have none.
func (u *unionFS) ensureOverride(dirfd int, name string, srcfd int, srcname string, st *unix.Stat_t) error {
	if !u.cfg.OverrideStat {
		return nil
	}
	if _, err := getxattrAll(dirfd, name, OverrideXattr); err == nil {
		return nil
	}
	o := u.readOverride(srcfd, srcname)
	if !o.set {
		o = override{set: true, uid: st.Uid, gid: st.Gid, perm: st.Mode & 0o7777}
	}
	return u.writeOverride(dirfd, name, o)
}
