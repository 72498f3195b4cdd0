package fs

import (
	"context"
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Copy-up builds the new upper object in work/ and renames it into place, so
// that the upper never shows a half-copied object, whatever crashes when.

// ensureUpper makes sure directory d exists in the upper layer, creating
// its ancestors first (metadata only).
func (d *node) ensureUpper() syscall.Errno {
	if d.upperFd() >= 0 {
		return 0
	}
	if d.u.upper == nil {
		return syscall.EROFS
	}
	d.u.copyMu.Lock()
	defer d.u.copyMu.Unlock()
	return d.ensureUpperLocked()
}

func (d *node) ensureUpperLocked() syscall.Errno {
	if d.upperFd() >= 0 {
		return 0
	}
	name, p := d.parentNode()
	if p == nil {
		return syscall.ENOENT
	}
	if errno := p.ensureUpperLocked(); errno != 0 {
		return errno
	}
	pfd := p.upperFd()
	src, _ := d.topFd()
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return toErrno(err)
	}
	u := d.u
	tmp := u.tmpName("dir")
	if err := unix.Mkdirat(u.work, tmp, 0o700); err != nil {
		return toErrno(err)
	}
	fail := func(err error) syscall.Errno {
		removeAllAt(u.work, tmp)
		return toErrno(err)
	}
	if err := u.copyMeta(u.work, tmp, src, "", &st, d.StableAttr().Ino, false); err != nil {
		return fail(err)
	}
	d.mu.Lock()
	lowerPath := d.lowerPath
	d.mu.Unlock()
	if pl := p.lowerPathOf(); pl+"/"+name != lowerPath {
		// A directory renamed before it was copied up (possible only
		// for a redirect found on disk) keeps pointing at its origin.
		if err := setxattrAt(u.work, tmp, u.redirXattr, []byte(lowerPath), 0); err != nil {
			return fail(err)
		}
	}
	if err := unix.Renameat(u.work, tmp, pfd, name); err != nil {
		return fail(err)
	}
	p.invalidateListing()
	fd, err := openDirAt(pfd, name)
	if err != nil {
		return toErrno(err)
	}
	d.mu.Lock()
	d.dirs = append([]dirLayer{{l: u.upper, fd: fd}}, d.dirs...)
	d.fds.add(fd)
	d.mu.Unlock()
	// A directory that became merged shows nlink 1 from now on: drop
	// the attributes the kernel has cached (no lock is taken for that).
	d.NotifyContent(-1, 0)
	return 0
}

func (d *node) lowerPathOf() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lowerPath
}

// umaskCleared: Mount has set the process umask to 0, so a file created
// with some permission bits has exactly those.
var umaskCleared atomic.Bool

// copyMeta gives dst (dirfd/name, or the dir dirfd itself when name is "")
// the owner, xattrs, mode and times of src (srcfd/srcname), and records the
// origin inode number so st_ino survives the copy.
func (u *unionFS) copyMeta(dirfd int, name string, srcfd int, srcname string, st *unix.Stat_t, origin uint64, fresh bool) error {
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	// fresh: a regular file the daemon has just created with st's
	// permission bits (umask is 0), so owner and mode may already be
	// right; each syscall saved is a few percent of a small copy-up.
	sameOwner := fresh && u.workOwnsNew && st.Uid == u.euid && int(st.Gid) == u.egid
	if !sameOwner {
		if err := unix.Fchownat(dirfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	attrs, err := listxattrAll(srcfd, srcname)
	if err != nil && err != unix.ENOTSUP {
		return err
	}
	for _, a := range attrs {
		if u.isPrivateXattr(a) && a != OverrideXattr {
			continue
		}
		v, err := getxattrAll(srcfd, srcname, a)
		if err != nil {
			if err == unix.ENODATA {
				continue
			}
			return err
		}
		if err := setxattrAt(dirfd, name, a, v, 0); err != nil {
			if err == unix.ENOTSUP || (err == unix.EPERM && isLink) {
				continue
			}
			return err
		}
	}
	if !isLink {
		// chown clears setuid and setgid, so those always come after it.
		if !fresh || st.Mode&0o7000 != 0 {
			if err := unix.Fchmodat(dirfd, name, st.Mode&0o7777, 0); err != nil {
				return err
			}
		}
		if err := u.ensureOverride(dirfd, name, srcfd, srcname, st); err != nil { // rootless.go
			return err
		}
	}
	if origin != 0 {
		err := setxattrAt(dirfd, name, u.originXattr, []byte(strconv.FormatUint(origin, 10)), 0)
		if err != nil && !(isLink && err == unix.EPERM) && err != unix.ENOTSUP {
			return err
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// copyUp moves a lower non-directory into the upper layer under its name;
// with withData false a regular file arrives empty (the caller truncates it
// anyway). inDirOp says the kernel holds a directory lock for this request
// (rename, link, unlink), so dentries may only be invalidated afterwards.
func (n *node) copyUp(ctx context.Context, withData, inDirOp bool) syscall.Errno {
	return n.copyUpAt(withData, true, inDirOp)
}

// copyUpAt copies n up. A hard-linked lower file goes to work/index (once
// for all its names, which then share the copy); materialize also links it
// at n's own name, as the kernel's overlayfs does with index=on.
func (n *node) copyUpAt(withData, materialize, inDirOp bool) syscall.Errno {
	u := n.u
	if u.upper == nil {
		return syscall.EROFS
	}
	n.copyMuLock()
	defer n.copyMuUnlock()
	n.mu.Lock()
	inUpper, key := n.layer.upper, n.indexKey
	n.mu.Unlock()
	if inUpper && (key == "" || !materialize) {
		return 0
	}
	name, p := n.parentNode()
	if p == nil && materialize {
		return syscall.ENOENT
	}
	var pfd int
	if materialize {
		if errno := p.ensureUpper(); errno != 0 {
			return errno
		}
		pfd = p.upperFd()
	}
	if inUpper {
		// indexed: give this name its own link unless it has one
		var st unix.Stat_t
		if lstatAt(pfd, name, &st) == nil && !isWhiteout(&st) {
			return 0
		}
		if err := unix.Linkat(u.index, key, pfd, name, 0); err != nil {
			return toErrno(err)
		}
		p.invalidateListing()
		return 0
	}
	srcfd, srcname, _, errno := n.loc()
	if errno != 0 {
		return errno
	}
	var st unix.Stat_t
	if err := lstatAt(srcfd, srcname, &st); err != nil {
		return toErrno(err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
		key = indexKey(&st)
		var ist unix.Stat_t
		if lstatAt(u.index, key, &ist) == nil {
			if materialize {
				if err := unix.Linkat(u.index, key, pfd, name, 0); err != nil {
					return toErrno(err)
				}
			}
			n.finishCopyUp(p, key, inDirOp, &st)
			return 0
		}
	} else if !materialize {
		return 0
	}
	tmp := u.tmpName("copy")
	fresh := false
	fail := func(err error) syscall.Errno {
		unix.Unlinkat(u.work, tmp, 0)
		return toErrno(err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		// Not yet visible to anyone, so it can carry its final
		// permission bits from the start.
		dfd, err := unix.Openat(u.work, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, st.Mode&0o777)
		if err != nil {
			return toErrno(err)
		}
		fresh = umaskCleared.Load()
		if withData && st.Size > 0 {
			sfd, err := unix.Openat(srcfd, srcname, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				unix.Close(dfd)
				return fail(err)
			}
			err = copyData(sfd, dfd, st.Size)
			unix.Close(sfd)
			if err == nil && !u.cfg.NoSync {
				err = unix.Fdatasync(dfd)
			}
			if err != nil {
				unix.Close(dfd)
				return fail(err)
			}
		}
		unix.Close(dfd)
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		sz, err := unix.Readlinkat(srcfd, srcname, buf)
		if err != nil {
			return toErrno(err)
		}
		if err := unix.Symlinkat(string(buf[:sz]), u.work, tmp); err != nil {
			return toErrno(err)
		}
	default:
		if err := unix.Mknodat(u.work, tmp, st.Mode, int(st.Rdev)); err != nil {
			return toErrno(err)
		}
	}
	if err := u.copyMeta(u.work, tmp, srcfd, srcname, &st, n.StableAttr().Ino, fresh); err != nil {
		return fail(err)
	}
	if key != "" {
		// Every name of the object shares these, being one inode.
		if err := setxattrAt(u.work, tmp, u.indexXattr, []byte(key), 0); err != nil {
			return fail(err)
		}
		if err := setxattrAt(u.work, tmp, u.nlinkXattr, []byte(strconv.FormatUint(uint64(st.Nlink), 10)), 0); err != nil {
			return fail(err)
		}
		if err := unix.Renameat(u.work, tmp, u.index, key); err != nil {
			return fail(err)
		}
		if materialize {
			if err := unix.Linkat(u.index, key, pfd, name, 0); err != nil {
				return toErrno(err)
			}
		}
	} else if err := unix.Renameat(u.work, tmp, pfd, name); err != nil {
		return fail(err)
	}
	n.finishCopyUp(p, key, inDirOp, &st)
	return 0
}

// finishCopyUp switches the node to its upper object. A node whose lower
// data the kernel may still hold as a passthrough backing file goes stale
// instead: the next lookup of the name gives a new Inode with the same
// st_ino, and the kernel is told to drop the name (at once where no
// directory lock is held, since until then it may answer stat from the lower
// backing file). The other names of a hard-linked file switch the same way.
// lowerSt is the lower object's stat, which a stale node whose lower data
// the kernel holds in its page cache goes on showing (node.lowerSt).
func (n *node) finishCopyUp(p *node, key string, inDirOp bool, lowerSt *unix.Stat_t) {
	ino := n.StableAttr().Ino
	nodes := []*node{n}
	if key != "" {
		nodes = append(nodes, n.u.hardLinkNodes(ino, n)...)
	}
	bump := false
	for _, m := range nodes {
		m.mu.Lock()
		if !m.layer.upper || m == n {
			m.layer = n.u.upper
			m.indexKey = key
			if m.lowerOpens > 0 {
				m.stale = true
				bump = true
				if m.cachedOpens > 0 {
					cp := *lowerSt
					m.lowerSt = &cp
				}
			}
		}
		stale := m.stale
		m.mu.Unlock()
		if stale {
			if mname, mp := m.parentNode(); mp != nil {
				if inDirOp {
					go mp.NotifyEntry(mname)
				} else {
					mp.NotifyEntry(mname)
				}
			}
		}
	}
	if bump {
		n.u.bumpGen(ino)
	}
	if p != nil {
		p.invalidateListing()
	}
}

// copyData copies size bytes from src to dst, keeping holes, with
// copy_file_range (reflinks where the filesystem can).
func copyData(src, dst int, size int64) error {
	off, end := int64(0), int64(0) // end: of the data written so far
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			data = off
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil || hole > size {
			hole = size
		}
		pos := data
		for pos < hole {
			rpos, wpos := pos, pos
			chunk := hole - pos
			if chunk > 1<<30 {
				chunk = 1 << 30
			}
			c, err := unix.CopyFileRange(src, &rpos, dst, &wpos, int(chunk), 0)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EXDEV || err == unix.ENOSYS || err == unix.EINVAL || err == unix.EOPNOTSUPP {
				c, err = copyRangeRW(src, dst, pos, chunk)
			}
			if err != nil {
				return err
			}
			if c == 0 {
				break
			}
			pos += int64(c)
			end = pos
		}
		off = hole
	}
	if end == size {
		// The new file has its size already: a truncate to it would
		// only change its times (a journal update per copy-up).
		return nil
	}
	return unix.Ftruncate(dst, size)
}

func copyRangeRW(src, dst int, off, n int64) (int, error) {
	buf := make([]byte, 1<<20)
	total := 0
	for int64(total) < n {
		want := int64(len(buf))
		if rem := n - int64(total); rem < want {
			want = rem
		}
		r, err := unix.Pread(src, buf[:want], off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, err
		}
		if r == 0 {
			break
		}
		if _, err := unix.Pwrite(dst, buf[:r], off+int64(total)); err != nil {
			return total, err
		}
		total += r
	}
	return total, nil
}
