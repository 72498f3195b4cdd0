package fs

import (
	"context"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var (
	_ = (gofs.NodeCreater)((*node)(nil))
	_ = (gofs.NodeMkdirer)((*node)(nil))
	_ = (gofs.NodeMknoder)((*node)(nil))
	_ = (gofs.NodeSymlinker)((*node)(nil))
	_ = (gofs.NodeLinker)((*node)(nil))
	_ = (gofs.NodeUnlinker)((*node)(nil))
	_ = (gofs.NodeRmdirer)((*node)(nil))
	_ = (gofs.NodeRenamer)((*node)(nil))
	_ = (gofs.NodeSetattrer)((*node)(nil))
	_ = (gofs.NodeSetxattrer)((*node)(nil))
	_ = (gofs.NodeRemovexattrer)((*node)(nil))
)

func callerOf(ctx context.Context) (uid, gid uint32, ok bool) {
	if c, found := ctx.(*fuse.Context); found {
		return c.Caller.Uid, c.Caller.Gid, true
	}
	return 0, 0, false
}

// target is where a new name goes: the parent's upper fd, and whether a
// whiteout sits there now (then the new object is built in work/ and
// renamed over it).
type target struct {
	fd         int
	name       string
	overWh     bool
	whMarker   bool // an AUFS-style .wh.NAME marker in the upper hides NAME
	parentMode uint32
	parentGid  uint32
}

func (d *node) prepareCreate(name string) (*target, syscall.Errno) {
	if d.u.upper == nil {
		return nil, syscall.EROFS
	}
	if strings.HasPrefix(name, ".wh.") {
		return nil, syscall.EINVAL
	}
	if len(name) > 255 {
		return nil, syscall.ENAMETOOLONG
	}
	// The kernel asks to create a name only after its own lookup found
	// none, and every change to a name passes through it: no need to
	// resolve the name through the layers again.
	if errno := d.ensureUpper(); errno != 0 {
		return nil, errno
	}
	t := &target{fd: d.upperFd(), name: name}
	var st unix.Stat_t
	if err := lstatAt(t.fd, name, &st); err == nil {
		if !isWhiteout(&st) {
			return nil, syscall.EEXIST
		}
		t.overWh = true
	} else {
		t.whMarker = whitedOut(t.fd, name)
	}
	var pst unix.Stat_t
	if err := unix.Fstat(t.fd, &pst); err == nil {
		t.parentMode, t.parentGid = pst.Mode, pst.Gid
		if o := d.u.readOverride(t.fd, ""); o.set {
			t.parentMode, t.parentGid = pst.Mode&unix.S_IFMT|o.perm, o.gid
		}
	}
	return t, 0
}

// place moves the object built at work/tmp to its name, replacing a whiteout.
func (d *node) place(t *target, tmp string, isDir bool) syscall.Errno {
	u := d.u
	if isDir && t.overWh {
		if err := unix.Renameat2(u.work, tmp, t.fd, t.name, unix.RENAME_EXCHANGE); err != nil {
			removeAllAt(u.work, tmp)
			return toErrno(err)
		}
		unix.Unlinkat(u.work, tmp, 0)
	} else if err := unix.Renameat(u.work, tmp, t.fd, t.name); err != nil {
		removeAllAt(u.work, tmp)
		return toErrno(err)
	}
	d.finishCreate(t)
	return 0
}

func (d *node) finishCreate(t *target) {
	if t.whMarker {
		unix.Unlinkat(t.fd, ".wh."+t.name, 0)
	}
	d.invalidateListing()
}

// own gives a new object the caller's owner (the directory's group when it
// is setgid, as the kernel does).
func (d *node) own(ctx context.Context, t *target, dirfd int, name string) error {
	uid, gid, ok := callerOf(ctx)
	if !ok {
		return nil
	}
	uid, gid = d.u.cfg.IDs.diskUID(uid), d.u.cfg.IDs.diskGID(gid)
	g := int(gid)
	if t.parentMode&unix.S_ISGID != 0 {
		g = int(t.parentGid)
	}
	// With overrides every new object gets one, even the daemon user's
	// own: fuse-overlayfs refuses upper entries without (rootless.go).
	if !d.u.cfg.OverrideStat && uint32(unix.Geteuid()) == uid && unix.Getegid() == g {
		return nil
	}
	if d.u.cfg.OverrideStat {
		var st unix.Stat_t
		if err := lstatAt(dirfd, name, &st); err != nil {
			return err
		}
		if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
			return nil // user xattrs exist only on files and directories
		}
		o := override{set: true, uid: uid, gid: uint32(g), perm: st.Mode & 0o7777}
		return d.u.writeOverride(dirfd, name, o)
	}
	var st unix.Stat_t
	if err := lstatAt(dirfd, name, &st); err != nil {
		return err
	}
	if st.Uid == uid && int(st.Gid) == g {
		return nil // e.g. the group came from a setgid parent
	}
	err := unix.Fchownat(dirfd, name, int(uid), g, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.EPERM && d.u.euid != 0 {
		return nil
	}
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK && st.Mode&0o6000 != 0 {
		// chown cleared setuid/setgid, which the caller's create kept
		// (the kernel has already stripped what the caller may not set)
		err = unix.Fchmodat(dirfd, name, st.Mode&0o7777, 0)
	}
	return err
}

// newEntry makes the node of an object just created in the upper under name
// and fills out. A new object has no origin, index or lower instances (a new
// directory in a merged one is opaque), so one stat describes it.
func (d *node) newEntry(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ufd := d.upperFd()
	r := &resolved{name: name, layer: d.u.upper}
	if err := lstatAt(ufd, name, &r.st); err != nil {
		return nil, toErrno(err)
	}
	r.ino = d.u.ino(r.st.Dev, r.st.Ino)
	if r.st.Mode&unix.S_IFMT == unix.S_IFDIR {
		fd, err := openDirAt(ufd, name)
		if err != nil {
			return nil, toErrno(err)
		}
		r.dirs = []dirLayer{{l: d.u.upper, fd: fd}}
		r.lowerPath = d.lowerPathOf() + "/" + name
		r.ovr = d.u.readOverride(fd, "")
	} else {
		r.ovr = d.u.readOverride(ufd, name)
	}
	ch := d.childNode(ctx, r)
	d.u.fillAttr(&out.Attr, &r.st, ch)
	return ch, 0
}

// makeNode creates a non-directory with mk(dirfd, name) either directly in
// the upper or through work/ when a whiteout must be replaced.
func (d *node) makeNode(ctx context.Context, name string, out *fuse.EntryOut, mk func(dirfd int, name string) error) (*gofs.Inode, syscall.Errno) {
	t, errno := d.prepareCreate(name)
	if errno != 0 {
		return nil, errno
	}
	dirfd, nm := t.fd, name
	if t.overWh {
		dirfd, nm = d.u.work, d.u.tmpName("new")
	}
	if err := mk(dirfd, nm); err != nil {
		return nil, toErrno(err)
	}
	if err := d.own(ctx, t, dirfd, nm); err != nil {
		unix.Unlinkat(dirfd, nm, 0)
		return nil, toErrno(err)
	}
	if t.overWh {
		if errno := d.place(t, nm, false); errno != 0 {
			return nil, errno
		}
	} else {
		d.finishCreate(t)
	}
	return d.newEntry(ctx, name, out)
}

func (d *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return d.makeNode(ctx, name, out, func(fd int, nm string) error {
		err := unix.Mknodat(fd, nm, mode, int(rdev))
		typ := mode & unix.S_IFMT
		if err == unix.EPERM && d.u.cfg.OverrideStat && (typ == unix.S_IFCHR || typ == unix.S_IFBLK) {
			// An unprivileged daemon records the device in the
			// override, on a plain file, as containers/storage does.
			f, err := unix.Openat(fd, nm, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return err
			}
			unix.Close(f)
			uid, gid, _ := callerOf(ctx)
			uid, gid = d.u.cfg.IDs.diskUID(uid), d.u.cfg.IDs.diskGID(gid)
			o := override{set: true, uid: uid, gid: gid, perm: mode & 0o7777, typ: typ, rdev: uint64(rdev)}
			return d.u.writeOverride(fd, nm, o)
		}
		return err
	})
}

func (d *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return d.makeNode(ctx, name, out, func(fd int, nm string) error {
		return unix.Symlinkat(target, fd, nm)
	})
}

func (d *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	var ffd int
	oflags := int(flags)&^syscall.O_EXCL | syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	ch, errno := d.makeNode(ctx, name, out, func(fd int, nm string) error {
		var err error
		ffd, err = retryEINTR(func() (int, error) { return unix.Openat(fd, nm, oflags, mode&0o7777) })
		return err
	})
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, d.u.newFile(ffd, true), noFlush, 0
}

func (d *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, errno := d.prepareCreate(name)
	if errno != 0 {
		return nil, errno
	}
	u := d.u
	if !t.overWh {
		if err := unix.Mkdirat(t.fd, name, mode&0o7777); err != nil {
			return nil, toErrno(err)
		}
		if err := d.own(ctx, t, t.fd, name); err != nil {
			unix.Unlinkat(t.fd, name, unix.AT_REMOVEDIR)
			return nil, toErrno(err)
		}
		if d.isMerged() {
			// As the kernel's overlayfs: a new directory in a merged
			// one is opaque, so a lower directory of the same name
			// added later can never show through.
			if err := u.setOpaque(t.fd, name); err != nil {
				unix.Unlinkat(t.fd, name, unix.AT_REMOVEDIR)
				return nil, toErrno(err)
			}
		}
		d.finishCreate(t)
		return d.newEntry(ctx, name, out)
	}
	// Over a whiteout: the new directory must not show what the lower
	// layers had under that name, so it is opaque.
	tmp := u.tmpName("mkdir")
	if err := unix.Mkdirat(u.work, tmp, mode&0o7777); err != nil {
		return nil, toErrno(err)
	}
	if t.parentMode&unix.S_ISGID != 0 {
		unix.Fchmodat(u.work, tmp, mode&0o7777|unix.S_ISGID, 0)
	}
	if err := d.own(ctx, t, u.work, tmp); err != nil {
		removeAllAt(u.work, tmp)
		return nil, toErrno(err)
	}
	if err := u.setOpaque(u.work, tmp); err != nil {
		removeAllAt(u.work, tmp)
		return nil, toErrno(err)
	}
	if errno := d.place(t, tmp, true); errno != 0 {
		return nil, errno
	}
	return d.newEntry(ctx, name, out)
}

func (u *unionFS) setOpaque(dirfd int, name string) error {
	err := setxattrAt(dirfd, name, u.opaqueXattr, []byte("y"), 0)
	if err == unix.EPERM || err == unix.ENOTSUP {
		// Where no overlay xattr can be set, the AUFS marker does it.
		fd, err2 := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err2 != nil {
			return err
		}
		defer unix.Close(fd)
		// O_NOFOLLOW: an upper handed to us (strata -o) may hold
		// anything under a marker's name; never write through it.
		mfd, err2 := unix.Openat(fd, ".wh..wh..opq", unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err2 != nil {
			return err
		}
		unix.Close(mfd)
		return nil
	}
	return err
}

// makeWhiteout creates a whiteout for name in the upper directory dirfd,
// where nothing exists under that name.
func (u *unionFS) makeWhiteout(dirfd int, name string) error {
	if !u.noWhDev {
		err := unix.Mknodat(dirfd, name, unix.S_IFCHR, 0)
		if err != unix.EPERM {
			return err
		}
		u.noWhDev = true
	}
	fd, err := unix.Openat(dirfd, ".wh."+name, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// existsBelow reports whether a lower layer of d shows name, so that
// removing the upper object needs a whiteout.
func (d *node) existsBelow(name string) bool {
	var missed []int
	for _, dl := range d.snapshotDirs() {
		if dl.l.upper {
			continue
		}
		var st unix.Stat_t
		if err := lstatAt(dl.fd, name, &st); err != nil {
			missed = append(missed, dl.fd)
			continue
		}
		return !isWhiteout(&st) && !markedOut(missed, name)
	}
	return false
}

// replaceWithWhiteout atomically turns the upper entry name into a whiteout
// and returns the name in work/ where the old entry now is.
func (u *unionFS) replaceWithWhiteout(dirfd int, name string, isDir bool) (string, error) {
	tmp := u.tmpName("wh")
	if err := u.makeWhiteout(u.work, tmp); err != nil {
		return "", err
	}
	if u.noWhDev {
		// Unprivileged: no atomic form; move the entry out, then mark.
		unix.Unlinkat(u.work, ".wh."+tmp, 0)
		if err := unix.Renameat(dirfd, name, u.work, tmp); err != nil {
			return "", err
		}
		return tmp, u.makeWhiteout(dirfd, name)
	}
	if err := unix.Renameat2(u.work, tmp, dirfd, name, unix.RENAME_EXCHANGE); err != nil {
		unix.Unlinkat(u.work, tmp, 0)
		return "", err
	}
	return tmp, nil
}

func (d *node) Unlink(ctx context.Context, name string) syscall.Errno {
	r, errno := d.resolve(name)
	if errno != 0 {
		return errno
	}
	if len(r.dirs) > 0 {
		r.closeDirs()
		return syscall.EISDIR
	}
	if errno := d.ensureUpper(); errno != 0 {
		return errno
	}
	u := d.u
	ufd := d.upperFd()
	defer d.invalidateListing()
	key, errno := d.indexForRemoval(ctx, name, r)
	if errno != 0 {
		return errno
	}
	u.adjustIndexNlink(key, -1)
	var st unix.Stat_t
	if lstatAt(ufd, name, &st) == nil && !isWhiteout(&st) {
		if !d.existsBelow(name) {
			return toErrno(unix.Unlinkat(ufd, name, 0))
		}
		tmp, err := u.replaceWithWhiteout(ufd, name, false)
		if err != nil {
			return toErrno(err)
		}
		return toErrno(unix.Unlinkat(u.work, tmp, 0))
	}
	return toErrno(u.makeWhiteout(ufd, name))
}

// indexForRemoval makes sure a hard-linked lower file that loses a name is
// in the index, where its link count is kept (the kernel's overlayfs does
// the same), and returns its index key ("" for other files).
func (d *node) indexForRemoval(ctx context.Context, name string, r *resolved) (string, syscall.Errno) {
	if !r.hardLinked {
		return "", 0
	}
	if r.indexKey != "" {
		return r.indexKey, 0
	}
	n, errno := d.childFor(ctx, name)
	if errno != 0 {
		return "", errno
	}
	if errno := n.copyUpAt(true, false, true); errno != 0 {
		return "", errno
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.indexKey, 0
}

// isEmptyMerged reports whether the directory instances show no entry.
func (u *unionFS) isEmptyMerged(dirs []dirLayer) (bool, syscall.Errno) {
	tmp := &node{u: u, dirs: dirs}
	list, errno := tmp.mergedListing()
	if errno != 0 {
		return false, errno
	}
	return len(list) == 0, 0
}

func (d *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	r, errno := d.resolve(name)
	if errno != 0 {
		return errno
	}
	defer r.closeDirs()
	if len(r.dirs) == 0 {
		return syscall.ENOTDIR
	}
	empty, errno := d.u.isEmptyMerged(r.dirs)
	if errno != 0 {
		return errno
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	if errno := d.ensureUpper(); errno != 0 {
		return errno
	}
	u := d.u
	ufd := d.upperFd()
	defer d.invalidateListing()
	if r.layer.upper {
		if d.existsBelow(name) {
			tmp, err := u.replaceWithWhiteout(ufd, name, true)
			if err != nil {
				return toErrno(err)
			}
			return toErrno(removeAllAt(u.work, tmp))
		}
		// Only whiteouts can be left inside; clear them first.
		if names, err := readNames(r.dirs[0].fd); err == nil {
			for _, n := range names {
				removeAllAt(r.dirs[0].fd, n)
			}
		}
		return toErrno(unix.Unlinkat(ufd, name, unix.AT_REMOVEDIR))
	}
	return toErrno(u.makeWhiteout(ufd, name))
}

// childFor returns the node for name, looking it up when the kernel has not.
func (d *node) childFor(ctx context.Context, name string) (*node, syscall.Errno) {
	if ch := d.GetChild(name); ch != nil {
		if n, ok := ch.Operations().(*node); ok {
			return n, 0
		}
	}
	var out fuse.EntryOut
	ch, errno := d.Lookup(ctx, name, &out)
	if errno != 0 {
		return nil, errno
	}
	return ch.Operations().(*node), 0
}

// prepareMove brings a rename's source into the upper layer: a file is
// copied up, a directory is created there (metadata only) and, when it has
// lower instances, records where they are (a redirect), so that no tree is
// copied.
func (n *node) prepareMove(ctx context.Context) syscall.Errno {
	if !n.isDir() {
		return n.copyUp(ctx, true, true)
	}
	if errno := n.ensureUpper(); errno != 0 {
		return errno
	}
	n.mu.Lock()
	hasLower := len(n.dirs) > 1
	fd, lp := n.dirs[0].fd, n.lowerPath
	n.mu.Unlock()
	if !hasLower {
		return 0
	}
	if _, err := getxattrAll(fd, "", n.u.redirXattr); err == nil {
		return 0
	}
	if lp == "" {
		lp = "/"
	}
	return toErrno(setxattrAt(fd, "", n.u.redirXattr, []byte(lp), 0))
}

// isMerged reports whether a directory has lower instances.
func (n *node) isMerged() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, dl := range n.dirs {
		if !dl.l.upper {
			return true
		}
	}
	return false
}

func (n *node) isPureUpperDir() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.dirs) == 1 && n.dirs[0].l.upper
}

func (d *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	u := d.u
	if u.upper == nil {
		return syscall.EROFS
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if strings.HasPrefix(newName, ".wh.") {
		return syscall.EINVAL
	}
	src, errno := d.childFor(ctx, name)
	if errno != 0 {
		return errno
	}
	var dst *node
	if r, errno := np.resolve(newName); errno == 0 {
		r.closeDirs()
		if dst, errno = np.childFor(ctx, newName); errno != 0 {
			return errno
		}
	} else if errno != syscall.ENOENT {
		return errno
	}
	if dst == src {
		return 0
	}
	if dst != nil && !dst.isDir() && !src.isDir() && dst.StableAttr().Ino == src.StableAttr().Ino {
		// Two names of one file: rename(2) does nothing. The kernel
		// sees two Inodes (one per name) and moves its dentries as
		// for a real rename; make it look both names up again.
		go d.NotifyEntry(name)
		go np.NotifyEntry(newName)
		return 0
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if exchange && dst == nil {
		return syscall.ENOENT
	}
	if dst != nil && !exchange {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if dst.isDir() {
			if !src.isDir() {
				return syscall.EISDIR
			}
			empty, errno := u.isEmptyMerged(dst.snapshotDirs())
			if errno != 0 {
				return errno
			}
			if !empty {
				return syscall.ENOTEMPTY
			}
		} else if src.isDir() {
			return syscall.ENOTDIR
		}
	}
	if errno := src.prepareMove(ctx); errno != 0 {
		return errno
	}
	if errno := d.ensureUpper(); errno != 0 {
		return errno
	}
	if errno := np.ensureUpper(); errno != 0 {
		return errno
	}
	ofd, nfd := d.upperFd(), np.upperFd()
	defer d.invalidateListing()
	defer np.invalidateListing()

	if exchange {
		if errno := dst.prepareMove(ctx); errno != 0 {
			return errno
		}
		if err := unix.Renameat2(ofd, name, nfd, newName, unix.RENAME_EXCHANGE); err != nil {
			return toErrno(err)
		}
		if src.isDir() && src.isPureUpperDir() && (np.isMerged() || np.existsBelow(newName)) {
			u.setOpaque(nfd, newName)
		}
		if dst.isDir() && dst.isPureUpperDir() && (d.isMerged() || d.existsBelow(name)) {
			u.setOpaque(ofd, name)
		}
		return 0
	}

	if dst != nil && !dst.isDir() {
		if r, errno := np.resolve(newName); errno == 0 {
			key, errno := np.indexForRemoval(ctx, newName, r)
			if errno != 0 {
				return errno
			}
			defer u.adjustIndexNlink(key, -1)
		}
	}
	var dst0 unix.Stat_t
	dstUpper := lstatAt(nfd, newName, &dst0) == nil
	dstWh := dstUpper && isWhiteout(&dst0)
	if src.isDir() && src.isPureUpperDir() && (dstWh || np.isMerged() || np.existsBelow(newName)) {
		// What the lower layers hold under the new name must stay
		// hidden under the moved directory.
		if err := u.setOpaque(ofd, name); err != nil {
			return toErrno(err)
		}
	}
	if dstUpper && !dstWh && dst != nil && dst.isDir() {
		// The target is empty in the union; only whiteouts remain
		// in its upper instance.
		if sub := dst.upperFd(); sub >= 0 {
			if names, err := readNames(sub); err == nil {
				for _, n := range names {
					removeAllAt(sub, n)
				}
			}
		}
	}
	srcBelow := d.existsBelow(name)
	if dstWh && src.isDir() {
		// A directory cannot replace the whiteout device by rename.
		if err := unix.Unlinkat(nfd, newName, 0); err != nil {
			return toErrno(err)
		}
	}
	var rflags uint
	if srcBelow && !u.noWhDev {
		rflags |= unix.RENAME_WHITEOUT
	}
	err := unix.Renameat2(ofd, name, nfd, newName, rflags)
	if err == unix.EINVAL && rflags != 0 {
		rflags = 0
		err = unix.Renameat2(ofd, name, nfd, newName, 0)
	}
	if err != nil {
		return toErrno(err)
	}
	if srcBelow && rflags == 0 {
		if err := u.makeWhiteout(ofd, name); err != nil {
			return toErrno(err)
		}
	}
	return 0
}

func (d *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.isDir() {
		return nil, syscall.EPERM
	}
	if errno := t.copyUp(ctx, true, true); errno != 0 {
		return nil, errno
	}
	tfd, tname, _, errno := t.loc()
	if errno != 0 {
		return nil, errno
	}
	tg, errno := d.prepareCreate(name)
	if errno != 0 {
		return nil, errno
	}
	t.mu.Lock()
	key := t.indexKey
	t.mu.Unlock()
	if tg.overWh {
		tmp := d.u.tmpName("link")
		if err := unix.Linkat(tfd, tname, d.u.work, tmp, 0); err != nil {
			return nil, toErrno(err)
		}
		if errno := d.place(tg, tmp, false); errno != 0 {
			return nil, errno
		}
	} else {
		if err := unix.Linkat(tfd, tname, tg.fd, name, 0); err != nil {
			return nil, toErrno(err)
		}
		d.finishCreate(tg)
	}
	d.u.adjustIndexNlink(key, +1)
	return d.Lookup(ctx, name, out) // the linked object keeps its origin
}

// setOverride records a chmod or chown in the override xattr: an
// unprivileged daemon cannot give files other owners, and keeps the real
// mode readable and writable for itself.
func (n *node) setOverride(fd int, name string, in *fuse.SetAttrIn) syscall.Errno {
	m, mok := in.GetMode()
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if !mok && !uok && !gok {
		return 0
	}
	uid, gid = n.u.cfg.IDs.diskUID(uid), n.u.cfg.IDs.diskGID(gid)
	var st unix.Stat_t
	if errno := n.statNode(&st); errno != 0 {
		return errno
	}
	n.mu.Lock()
	o := n.ovr
	n.mu.Unlock()
	if !o.set {
		o = override{set: true, uid: st.Uid, gid: st.Gid, perm: st.Mode & 0o7777}
	}
	if mok {
		o.perm = m & 0o7777
	}
	if uok {
		o.uid = uid
		o.perm &^= unix.S_ISUID // as chown(2) does
	}
	if gok {
		o.gid = gid
		if o.perm&0o010 != 0 {
			o.perm &^= unix.S_ISGID
		}
	}
	if err := n.u.writeOverride(fd, name, o); err != nil {
		return toErrno(err)
	}
	n.mu.Lock()
	n.ovr = o
	n.mu.Unlock()
	return 0
}

// prepareMeta copies an object up before a change; linkName also gives a
// hard-linked file's name its own upper link. The kernel's overlayfs does
// that for setattr (mode, owner, times, size) but not for xattr changes.
func (n *node) prepareMeta(ctx context.Context, withData, linkName bool) syscall.Errno {
	if n.u.upper == nil {
		return syscall.EROFS
	}
	if n.isDir() {
		return n.ensureUpper()
	}
	// A metadata change of an indexed hard link changes the one upper
	// inode; like the kernel, it gives this name no link of its own.
	return n.copyUpAt(withData, linkName || !n.inUpper(), false)
}

func (n *node) inUpper() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.layer.upper
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	// Only a handle on the upper object may be changed through its fd: a
	// read-only handle may hold the lower file.
	if fh, ok := f.(fileFd); ok && fh.isUpper() {
		if errno := f.(gofs.FileSetattrer).Setattr(ctx, in, out); errno != 0 {
			return errno
		}
		if _, ok := f.(hardLinkedFile); ok {
			if _, sized := in.GetSize(); sized {
				n.dropSiblingPages(fh.fd()) // file.go
			}
		}
		n.invalidateSiblingAttrs()
		return n.Getattr(ctx, f, out)
	}
	withData := true
	sz, truncating := in.GetSize()
	if truncating && sz == 0 {
		withData = false
	}
	if errno := n.prepareMeta(ctx, withData, true); errno != 0 {
		return errno
	}
	fd, name, _, errno := n.at()
	if errno != 0 {
		return errno
	}
	if n.u.cfg.OverrideStat {
		if errno := n.setOverride(fd, name, in); errno != 0 {
			return errno
		}
	} else if m, ok := in.GetMode(); ok {
		var err error
		if name == "" {
			err = unix.Fchmod(fd, m&0o7777)
		} else if n.StableAttr().Mode == unix.S_IFLNK {
			err = unix.EOPNOTSUPP
		} else {
			err = unix.Fchmodat(fd, name, m&0o7777, 0)
		}
		if err != nil {
			return toErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if (uok || gok) && !n.u.cfg.OverrideStat {
		su, sg := -1, -1
		if uok {
			su = int(n.u.cfg.IDs.diskUID(uid))
		}
		if gok {
			sg = int(n.u.cfg.IDs.diskGID(gid))
		}
		var err error
		if name == "" {
			err = unix.Fchown(fd, su, sg)
		} else {
			err = unix.Fchownat(fd, name, su, sg, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return toErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if name == "" {
			return syscall.EISDIR
		}
		tfd, err := unix.Openat(fd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return toErrno(err)
		}
		err = unix.Ftruncate(tfd, int64(sz))
		if err == nil && n.u.cfg.NoPassthrough {
			n.mu.Lock()
			hl := n.hardLinked
			n.mu.Unlock()
			if hl {
				n.dropSiblingPages(tfd) // file.go
			}
		}
		unix.Close(tfd)
		if err != nil {
			return toErrno(err)
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		var err error
		if name == "" {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd, ""), ts, 0)
		} else {
			err = unix.UtimesNanoAt(fd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return toErrno(err)
		}
	}
	n.invalidateSiblingAttrs()
	return n.Getattr(ctx, nil, out)
}

// invalidateSiblingAttrs drops the attributes the kernel holds for the
// other names of a hard-linked file after a change through this one: they
// are one inode on disk but Inodes of their own here, and their 1 ns
// attribute timeout still lets the kernel answer from its cache until the
// next jiffy (a truncate through one name, then fstat through another,
// showed the old size). Attributes only, so no page lock is involved.
func (n *node) invalidateSiblingAttrs() {
	n.mu.Lock()
	hl := n.hardLinked
	n.mu.Unlock()
	if !hl {
		return
	}
	for _, m := range n.u.hardLinkNodes(n.StableAttr().Ino, n) {
		m.NotifyContent(-1, 0)
	}
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if attr == LayerXattr {
		return syscall.EPERM
	}
	attr = n.u.diskXattr(attr)
	if errno := n.prepareMeta(ctx, true, false); errno != 0 {
		return errno
	}
	fd, name, _, errno := n.at()
	if errno != 0 {
		return errno
	}
	return toErrno(setxattrAt(fd, name, attr, data, int(flags)))
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	attr = n.u.diskXattr(attr)
	fd, name, _, errno := n.at()
	if errno != 0 {
		return errno
	}
	if _, err := getxattrAt(fd, name, attr, nil); err != nil {
		return toErrno(err)
	}
	if errno := n.prepareMeta(ctx, true, false); errno != 0 {
		return errno
	}
	if fd, name, _, errno = n.at(); errno != 0 {
		return errno
	}
	return toErrno(removexattrAt(fd, name, attr))
}
