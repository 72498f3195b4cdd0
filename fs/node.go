package fs

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// dirLayer is one layer's instance of a merged directory.
type dirLayer struct {
	l  *layer
	fd int
}

// fdSet owns the directory fds of a node. It is separate from the node so
// that a node go-fuse discards in favour of an already known one still gets
// its fds closed (by a cleanup) without keeping the node alive.
type fdSet struct {
	mu     sync.Mutex
	fds    []int
	closed bool
}

func (s *fdSet) add(fd int) {
	s.mu.Lock()
	s.fds = append(s.fds, fd)
	s.mu.Unlock()
}

func (s *fdSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	s.fds = nil
}

// node is one object of the union: a merged directory or a file, symlink or
// special file living in exactly one layer.
type node struct {
	gofs.Inode
	u *unionFS

	mu  sync.Mutex
	cmu sync.Mutex // held for a whole copy-up of this node
	// Directories: the instances top-down; dirs[0] is the upper when the
	// directory exists there. lowerPath is where its lower instances live
	// (it differs from the path in the mount after a rename: a redirect).
	dirs      []dirLayer
	lowerPath string
	fds       *fdSet
	listing   []fuse.DirEntry   // cached merged listing, nil when unknown
	listedIn  map[string]*layer // with listing: the layer that shows each name
	listGen   uint64            // bumped by every invalidation

	// Non-directories: the layer holding the object, and its key in
	// work/index when it is a copied-up hard-linked lower file.
	layer    *layer
	indexKey string
	// lowerOpens counts the open handles on the lower object: while there
	// are any, the kernel may hold the lower file as this Inode's
	// passthrough backing file (RELEASE comes only after the kernel has
	// let go of it, mappings included). stale: copied up while some were
	// open, so opens must go through a fresh lookup.
	lowerOpens int
	stale      bool
	// cachedOpens: those of lowerOpens served through the kernel's page
	// cache (file.cached). A node gone stale while there are any goes on
	// showing its lower object (lowerSt): the kernel sizes those pages by
	// the attributes it is given, and a truncate(2) of the name that
	// copied the file up would otherwise cut them under a reader's mmap
	// (SIGBUS), where the kernel's overlayfs leaves the lower file mapped.
	cachedOpens int
	lowerSt     *unix.Stat_t
	// pagesStored: an open stored (or tried to store) the lower data in
	// the kernel's page cache (file.go storePages); it is not tried twice.
	// storedAt is where the lower file lives, below its layer's root, once
	// a store succeeded: later read-only opens need no layer fd (storedFile).
	pagesStored bool
	storedAt    string
	// hardLinked: one of several names of a lower file, with an Inode of
	// its own; the kernel must not cache its attributes, which a write
	// through another name changes.
	hardLinked bool
	// ovr is the owner/mode/type override recorded on the object.
	ovr override
	// lastSt is the object's last known stat, for fstat of an unlinked
	// object the kernel opens without us (fifos, sockets, devices).
	lastSt *unix.Stat_t
}

var (
	_ = (gofs.NodeLookuper)((*node)(nil))
	_ = (gofs.NodeGetattrer)((*node)(nil))
	_ = (gofs.NodeOnForgetter)((*node)(nil))
	_ = (gofs.NodeReadlinker)((*node)(nil))
	_ = (gofs.NodeOpener)((*node)(nil))
	_ = (gofs.NodeStatfser)((*node)(nil))
	_ = (gofs.NodeGetxattrer)((*node)(nil))
	_ = (gofs.NodeListxattrer)((*node)(nil))
)

func (u *unionFS) newNode() *node {
	return &node{u: u}
}

// isSpecial: a fifo, socket or device, which the kernel opens itself.
func isSpecial(mode uint32) bool {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK:
		return true
	}
	return false
}

func (n *node) copyMuLock()   { n.cmu.Lock() }
func (n *node) copyMuUnlock() { n.cmu.Unlock() }

func (n *node) isDir() bool { return n.StableAttr().Mode == syscall.S_IFDIR }

func (n *node) OnForget() {
	if n.fds != nil {
		n.fds.closeAll()
	}
}

// setDirs installs the directory instances and takes ownership of their fds.
func (n *node) setDirs(dirs []dirLayer) {
	n.dirs = dirs
	if n.fds == nil {
		n.fds = &fdSet{}
		runtime.AddCleanup(n, func(s *fdSet) { s.closeAll() }, n.fds)
	}
	for _, d := range dirs {
		n.fds.add(d.fd)
	}
}

func (n *node) snapshotDirs() []dirLayer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dirs
}

// fdFor returns this directory's fd in layer l, or -1.
func (n *node) fdFor(l *layer) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, d := range n.dirs {
		if d.l == l {
			return d.fd
		}
	}
	return -1
}

// upperFd returns the directory's upper fd, or -1.
func (n *node) upperFd() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.dirs) > 0 && n.dirs[0].l.upper {
		return n.dirs[0].fd
	}
	return -1
}

// topFd returns the fd of the topmost instance of a directory.
func (n *node) topFd() (int, *layer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.dirs) == 0 {
		return -1, nil
	}
	return n.dirs[0].fd, n.dirs[0].l
}

func (n *node) parentNode() (string, *node) {
	name, p := n.Parent()
	if p == nil {
		return "", nil
	}
	pn, _ := p.Operations().(*node)
	return name, pn
}

// loc returns where a non-directory lives now: a directory fd and a name.
func (n *node) loc() (int, string, *layer, syscall.Errno) {
	n.mu.Lock()
	l, key := n.layer, n.indexKey
	n.mu.Unlock()
	if key != "" {
		return n.u.index, key, l, 0
	}
	name, p := n.parentNode()
	if p == nil {
		return -1, "", l, syscall.ENOENT
	}
	fd := p.fdFor(l)
	if fd < 0 {
		return -1, "", l, syscall.ENOENT
	}
	return fd, name, l, 0
}

// at returns (fd, name) addressing the object itself for the *At helpers:
// for a directory its top fd and "", for others the parent fd and name.
func (n *node) at() (int, string, *layer, syscall.Errno) {
	if n.isDir() {
		fd, l := n.topFd()
		if fd < 0 {
			return -1, "", nil, syscall.ENOENT
		}
		return fd, "", l, 0
	}
	return n.loc()
}

// resolved is the outcome of looking a name up through the layers.
type resolved struct {
	name      string
	st        unix.Stat_t
	layer     *layer
	dirs      []dirLayer // directories: opened instances, top-down
	lowerPath string
	ino       uint64
	indexKey  string
	ovr       override
	// hardLinked: a regular file with more than one name in a lower layer
	// (or its copy in the index). Each name gets its own Inode (same
	// st_ino), so that a copy-up knows which name it came through.
	hardLinked bool
}

func (r *resolved) closeDirs() {
	for _, d := range r.dirs {
		unix.Close(d.fd)
	}
	r.dirs = nil
}

func (u *unionFS) isOpaque(fd int) bool {
	if u.cfg.Raw {
		return false
	}
	var b [4]byte
	for _, a := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if sz, err := unix.Fgetxattr(fd, a, b[:]); err == nil && sz == 1 && b[0] == 'y' {
			return true
		}
	}
	if u.cfg.Rootless && u.fuseOverlayfsOpaque(fd) { // rootless.go
		return true
	}
	var st unix.Stat_t
	return lstatAt(fd, ".wh..wh..opq", &st) == nil
}

// whitedOut reports whether layer dir fd hides name with an AUFS-style
// ".wh.NAME" marker.
func whitedOut(fd int, name string) bool {
	if len(name)+4 > 255 {
		return false
	}
	var st unix.Stat_t
	return lstatAt(fd, ".wh."+name, &st) == nil
}

// markedOut reports whether any of the layer dirs hides name with an AUFS
// marker.
func markedOut(fds []int, name string) bool {
	for _, fd := range fds {
		if whitedOut(fd, name) {
			return true
		}
	}
	return false
}

// resolve looks name up in directory d, top-down.
func (d *node) resolve(name string) (*resolved, syscall.Errno) {
	raw := d.u.cfg.Raw
	if strings.HasPrefix(name, ".wh.") && !raw {
		return nil, syscall.ENOENT
	}
	if len(name) > 255 {
		return nil, syscall.ENAMETOOLONG
	}
	r := &resolved{name: name}
	d.mu.Lock()
	dirs := d.dirs
	parentLowerPath := d.lowerPath
	start := 0
	if d.listing != nil {
		// The cached listing knows which layer shows the name, or
		// that none does: no need to probe the layers above it.
		l, ok := d.listedIn[name]
		if !ok {
			d.mu.Unlock()
			return nil, syscall.ENOENT
		}
		for i, dl := range dirs {
			if dl.l == l {
				start = i
				break
			}
		}
	}
	d.mu.Unlock()
	var missedBuf [8]int
	missed := missedBuf[:0]
	for i := 0; i < len(dirs); i++ {
		dl := dirs[i]
		if i < start && !dl.l.upper {
			// The listing says nothing above layer start shows the
			// name. The upper is always probed: copy-ups change it.
			continue
		}
		var st unix.Stat_t
		err := lstatAt(dl.fd, name, &st)
		if err == unix.ENOENT {
			// An AUFS ".wh.NAME" marker here matters only if a layer
			// below has the name: probe for it then, not now.
			if !raw {
				missed = append(missed, dl.fd)
			}
			continue
		}
		if err != nil {
			r.closeDirs()
			return nil, toErrno(err)
		}
		if markedOut(missed, name) {
			break
		}
		missed = missed[:0]
		if isWhiteout(&st) && !raw {
			break
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if len(r.dirs) > 0 {
				break // a non-directory below a directory is hidden
			}
			r.st, r.layer = st, dl.l
			break
		}
		fd, err := openDirAt(dl.fd, name)
		if err != nil {
			r.closeDirs()
			return nil, toErrno(err)
		}
		if len(r.dirs) == 0 {
			r.st, r.layer = st, dl.l
			r.lowerPath = parentLowerPath + "/" + name
		}
		r.dirs = append(r.dirs, dirLayer{l: dl.l, fd: fd})
		if d.u.isOpaque(fd) {
			break
		}
		if dl.l.upper {
			if redir, err := getxattrAll(fd, "", d.u.redirXattr); err == nil && len(redir) > 0 {
				r.lowerPath = redirectPath(parentLowerPath, string(redir))
				if errno := d.u.appendRedirected(r, dirs[1:]); errno != 0 {
					r.closeDirs()
					return nil, errno
				}
				break
			}
		}
	}
	if r.layer == nil {
		return nil, syscall.ENOENT
	}
	r.ino = d.u.ino(r.st.Dev, r.st.Ino)
	if d.u.cfg.OverrideStat {
		if len(r.dirs) > 0 {
			r.ovr = d.u.readOverride(r.dirs[0].fd, "")
		} else if fd := d.fdIn(dirs, r.layer); fd >= 0 {
			r.ovr = d.u.readOverride(fd, name)
		}
	}
	if r.layer.upper {
		fd, nm := dirs[0].fd, name
		if len(r.dirs) > 0 {
			fd, nm = r.dirs[0].fd, ""
		}
		if v, err := getxattrAll(fd, nm, d.u.originXattr); err == nil {
			if o, err := strconv.ParseUint(string(v), 10, 64); err == nil && o != 0 {
				r.ino = o
			}
		}
		if r.st.Mode&unix.S_IFMT == unix.S_IFREG && r.st.Nlink > 1 {
			if v, err := getxattrAll(fd, nm, d.u.indexXattr); err == nil && len(v) > 0 && d.u.inIndex(string(v), &r.st) {
				r.indexKey, r.hardLinked = string(v), true
			}
		}
	} else if r.st.Mode&unix.S_IFMT == unix.S_IFREG && r.st.Nlink > 1 {
		r.hardLinked = true
	}
	if r.hardLinked && d.u.index >= 0 && !r.layer.upper {
		key := indexKey(&r.st)
		var ist unix.Stat_t
		if lstatAt(d.u.index, key, &ist) == nil {
			r.indexKey, r.layer = key, d.u.upper
			r.st = ist
		}
	}
	return r, 0
}

// indexNlink is the link count of an indexed hard link as the union shows
// it: the lower names plus links made, less names removed.
func (u *unionFS) indexNlink(key string, fallback uint32) uint32 {
	v, err := getxattrAll(u.index, key, u.nlinkXattr)
	if err != nil {
		return fallback
	}
	n, err := strconv.ParseUint(string(v), 10, 32)
	if err != nil {
		return fallback
	}
	return uint32(n)
}

// adjustIndexNlink records a link made (+1) or a name removed (-1), and
// makes the kernel drop the cached attributes of every name's Inode.
func (u *unionFS) adjustIndexNlink(key string, delta int) {
	if key == "" || u.index < 0 {
		return
	}
	n := int(u.indexNlink(key, 1)) + delta
	if n < 0 {
		n = 0
	}
	setxattrAt(u.index, key, u.nlinkXattr, []byte(strconv.Itoa(n)), 0)
	var st unix.Stat_t
	if lstatAt(u.index, key, &st) == nil {
		if v, err := getxattrAll(u.index, key, u.originXattr); err == nil {
			if ino, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				for _, m := range u.hardLinkNodes(ino, nil) {
					m.NotifyContent(-1, 0) // attributes only
				}
			}
		}
	}
}

// fdIn finds layer l's fd among dirs.
func (d *node) fdIn(dirs []dirLayer, l *layer) int {
	for _, dl := range dirs {
		if dl.l == l {
			return dl.fd
		}
	}
	return -1
}

func indexKey(st *unix.Stat_t) string {
	return strconv.FormatUint(st.Dev, 16) + "-" + strconv.FormatUint(st.Ino, 16)
}

// redirectPath turns a redirect xattr value into a lower path: absolute
// values are taken as they are, relative ones are siblings in the parent.
func redirectPath(parent, v string) string {
	if strings.HasPrefix(v, "/") {
		return strings.TrimRight(v, "/")
	}
	return parent + "/" + v
}

// appendRedirected adds the lower instances of a redirected directory, found
// at r.lowerPath from each lower root.
func (u *unionFS) appendRedirected(r *resolved, below []dirLayer) syscall.Errno {
	rel := strings.TrimPrefix(r.lowerPath, "/")
	for _, l := range u.lowers {
		fd, err := openBeneath(l.root, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
			continue
		}
		if err == unix.EXDEV {
			// The redirect climbs out of the layer: ignore it.
			u.log.Warnf("redirect %q leaves layer %s; ignored", r.lowerPath, l.path)
			continue
		}
		if err != nil {
			return toErrno(err)
		}
		r.dirs = append(r.dirs, dirLayer{l: l, fd: fd})
		if u.isOpaque(fd) {
			break
		}
	}
	return 0
}

// childNode makes (or finds) the Inode for a resolved entry.
func (d *node) childNode(ctx context.Context, r *resolved) *gofs.Inode {
	mode := r.st.Mode & unix.S_IFMT
	if r.ovr.typ != 0 && mode == unix.S_IFREG {
		mode = r.ovr.typ // a device or fifo recorded on a plain file
	}
	attr := gofs.StableAttr{Mode: mode, Ino: r.ino, Gen: d.u.gen(r.ino)}
	if r.hardLinked {
		attr.Gen = attr.Gen<<32 | nameTag(d.StableAttr().Ino, r.name)
	}
	n := d.u.newNode()
	n.ovr = r.ovr
	if r.st.Mode&unix.S_IFMT == unix.S_IFDIR {
		n.lowerPath = r.lowerPath
		n.setDirs(r.dirs)
		r.dirs = nil
	} else {
		n.layer = r.layer
		n.indexKey = r.indexKey
		n.hardLinked = r.hardLinked
		if r.hardLinked {
			d.u.addHardLinkNode(r.ino, n)
		}
	}
	return d.NewInode(ctx, n, attr)
}

// nameTag tells apart the names of one hard-linked file: the low half of a
// per-name Inode's generation.
func nameTag(parentIno uint64, name string) uint64 {
	h := fnv.New32a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], parentIno)
	h.Write(b[:])
	h.Write([]byte(name))
	return uint64(h.Sum32() | 1)
}

func (d *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	r, errno := d.resolve(name)
	if errno != 0 {
		return nil, errno
	}
	ch := d.childNode(ctx, r)
	d.u.fillAttr(&out.Attr, &r.st, ch)
	if r.hardLinked {
		out.SetAttrTimeout(uncachedAttrTimeout)
	}
	return ch, 0
}

// fillAttr converts a layer stat into what the mount shows for node ch.
func (u *unionFS) fillAttr(out *fuse.Attr, st *unix.Stat_t, ch *gofs.Inode) {
	if n, ok := ch.Operations().(*node); ok && isSpecial(st.Mode) {
		// Kept only for the types the kernel opens without us: a
		// pointer, so that the 100k ordinary nodes of a big walk don't
		// each carry a stat.
		cp := *st
		n.mu.Lock()
		n.lastSt = &cp
		n.mu.Unlock()
	}
	out.Ino = ch.StableAttr().Ino
	out.Size = uint64(st.Size)
	out.Blocks = uint64(st.Blocks)
	out.Atime, out.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	out.Mtime, out.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	out.Ctime, out.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	out.Mode = st.Mode
	out.Nlink = uint32(st.Nlink)
	out.Owner = fuse.Owner{Uid: st.Uid, Gid: st.Gid}
	out.Rdev = uint32(unix.Mkdev(unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	out.Blksize = uint32(st.Blksize)
	if n, ok := ch.Operations().(*node); ok && st.Mode&unix.S_IFMT == unix.S_IFREG {
		n.mu.Lock()
		key := n.indexKey
		n.mu.Unlock()
		if key != "" {
			out.Nlink = u.indexNlink(key, out.Nlink)
		}
	}
	if n, ok := ch.Operations().(*node); ok && u.cfg.OverrideStat {
		n.mu.Lock()
		o := n.ovr
		n.mu.Unlock()
		o.apply(out)
	}
	if !u.cfg.IDs.Identity() {
		u.cfg.IDs.present(out)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if n, ok := ch.Operations().(*node); ok {
			n.mu.Lock()
			merged := len(n.dirs) > 1
			n.mu.Unlock()
			if merged {
				// As the kernel's overlayfs: a merged directory's
				// link count is unknown, and 1 tells find so.
				out.Nlink = 1
			}
		}
	}
}

// inIndex reports whether work/index holds key as the upper file st. It
// does not when the upper is mounted with another workdir than the one that
// indexed it: the file is then an ordinary upper file with several names.
func (u *unionFS) inIndex(key string, st *unix.Stat_t) bool {
	if u.index < 0 {
		return false
	}
	var ist unix.Stat_t
	return lstatAt(u.index, key, &ist) == nil && ist.Dev == st.Dev && ist.Ino == st.Ino
}

// statNode stats the object behind n.
func (n *node) statNode(st *unix.Stat_t) syscall.Errno {
	fd, name, _, errno := n.at()
	if errno != 0 {
		return errno
	}
	var err error
	if name == "" {
		err = unix.Fstat(fd, st)
	} else {
		err = lstatAt(fd, name, st)
	}
	return toErrno(err)
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	lowerSt, hl := n.lowerSt, n.hardLinked
	if n.cachedOpens == 0 {
		lowerSt = nil
	}
	n.mu.Unlock()
	// A name of a hard-linked file: its attributes are not kept at all.
	attrTimeout := func() {
		if hl {
			out.SetTimeout(uncachedAttrTimeout)
		}
	}
	if lowerSt != nil {
		n.u.fillAttr(&out.Attr, lowerSt, &n.Inode)
		attrTimeout()
		return 0
	}
	var st unix.Stat_t
	if fh, ok := f.(fileFd); ok && !n.isDir() {
		if err := unix.Fstat(fh.fd(), &st); err != nil {
			return toErrno(err)
		}
		n.u.fillAttr(&out.Attr, &st, &n.Inode)
		if _, p := n.Parent(); p == nil && !hl {
			// Unlinked while open. (A name of a hard-linked file
			// has an Inode of its own: the file lives on under its
			// other names, with the link count fillAttr gave.)
			out.Nlink = 0
		}
		attrTimeout()
		return 0
	}
	if errno := n.statNode(&st); errno != 0 {
		if _, p := n.Parent(); p != nil || n.isDir() || errno != syscall.ENOENT {
			return errno
		}
		// Unlinked, yet still open (a fifo the kernel opened itself).
		n.mu.Lock()
		last := n.lastSt
		n.mu.Unlock()
		if last == nil {
			return errno
		}
		st = *last
		n.u.fillAttr(&out.Attr, &st, &n.Inode)
		out.Nlink = 0
		return 0
	}
	n.u.fillAttr(&out.Attr, &st, &n.Inode)
	attrTimeout()
	return 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	fd, name, _, errno := n.loc()
	if errno != 0 {
		return nil, errno
	}
	buf := make([]byte, 256)
	for {
		sz, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return nil, toErrno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
		buf = make([]byte, len(buf)*4)
	}
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	l := n.u.layers()[0]
	var s unix.Statfs_t
	if err := unix.Fstatfs(l.root, &s); err != nil {
		return toErrno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = s.Blocks, s.Bfree, s.Bavail
	out.Files, out.Ffree = s.Files, s.Ffree
	out.Bsize, out.Frsize = uint32(s.Bsize), uint32(s.Frsize)
	out.NameLen = 255
	return 0
}

// describeLayer is the user.strata.layer value for layer l.
func (u *unionFS) describeLayer(l *layer) string {
	if l == nil {
		return ""
	}
	if l.upper {
		return "upper: " + l.path
	}
	i := l.index
	if u.upper != nil {
		i--
	}
	if i < len(u.cfg.LayerInfo) && u.cfg.LayerInfo[i] != "" {
		return u.cfg.LayerInfo[i]
	}
	return "lower " + strconv.Itoa(i) + ": " + l.path
}

// isPrivateXattr reports whether an on-disk xattr is overlay bookkeeping,
// never shown and never copied up. Names a user set under the overlay's own
// prefix are stored escaped (trusted.overlay.overlay.X for
// trusted.overlay.X), as the kernel's overlayfs does since 6.7, and are not
// private.
func (u *unionFS) isPrivateXattr(name string) bool {
	if u.cfg.Raw {
		return false
	}
	if strings.HasPrefix(name, u.xattrPrefix+"overlay.") {
		return false
	}
	if u.cfg.OverrideStat && name == OverrideXattr {
		return true
	}
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") ||
		strings.HasPrefix(name, fuseOverlayfsPrefix) // rootless.go
}

// diskXattr maps a name as the mount shows it to the name on disk.
func (u *unionFS) diskXattr(name string) string {
	if enc, ok := u.encodeXattr(name); ok {
		return enc
	}
	if !u.cfg.Raw && strings.HasPrefix(name, u.xattrPrefix) {
		return u.xattrPrefix + "overlay." + name[len(u.xattrPrefix):]
	}
	return name
}

// shownXattr maps an on-disk name to the name the mount shows; ok is false
// for private names.
func (u *unionFS) shownXattr(name string) (string, bool) {
	if u.cfg.Raw {
		return name, true
	}
	if strings.HasPrefix(name, u.xattrPrefix+"overlay.") {
		return u.xattrPrefix + name[len(u.xattrPrefix)+len("overlay."):], true
	}
	if dec, ok := u.decodeXattr(name); ok {
		return dec, true
	}
	return name, !u.isPrivateXattr(name)
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	fd, name, l, errno := n.at()
	if errno != 0 {
		return 0, errno
	}
	if attr == LayerXattr {
		v := n.u.describeLayer(l)
		if len(dest) == 0 {
			return uint32(len(v)), 0
		}
		if len(v) > len(dest) {
			return uint32(len(v)), syscall.ERANGE
		}
		return uint32(copy(dest, v)), 0
	}
	disk := n.u.diskXattr(attr)
	if n.u.isPrivateXattr(disk) {
		return 0, syscall.ENODATA
	}
	sz, err := getxattrAt(fd, name, disk, dest)
	if err != nil {
		return uint32(sz), toErrno(err)
	}
	return uint32(sz), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	fd, name, _, errno := n.at()
	if errno != 0 {
		return 0, errno
	}
	names, err := listxattrAll(fd, name)
	if err != nil {
		return 0, toErrno(err)
	}
	var buf []byte
	for _, a := range names {
		a, ok := n.u.shownXattr(a)
		if !ok {
			continue
		}
		buf = append(buf, a...)
		buf = append(buf, 0)
	}
	if len(dest) == 0 {
		return uint32(len(buf)), 0
	}
	if len(buf) > len(dest) {
		return uint32(len(buf)), syscall.ERANGE
	}
	copy(dest, buf)
	return uint32(len(buf)), 0
}
