package fs

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// fileFd is implemented by strata's file handles.
type fileFd interface {
	fd() int
	isUpper() bool
}

// file is an open layer file. It is go-fuse's loopback file, which offers
// passthrough to the kernel (the kernel then reads and writes the layer file
// itself), with a fallback to serving reads and writes here.
type file struct {
	*gofs.LoopbackFile
	fdNum  int
	upper  bool
	noSync bool
	// lowerOf: the node whose lower object this handle holds open.
	lowerOf *node
	// cached: served through the kernel's page cache (filled by
	// storePages, or by READs here once evicted) instead of passthrough.
	cached bool
}

// PassthroughFd offers the layer fd to the kernel unless the handle is
// served through the page cache.
func (f *file) PassthroughFd() (int, bool) {
	if f.cached {
		return -1, false
	}
	return f.LoopbackFile.PassthroughFd()
}

// smallLowerFile is the size up to which a lower file opened read-only is
// served through the kernel's page cache rather than by passthrough. A
// passthrough open costs two more syscalls here (register and release the
// backing fd) and, since the kernel drops a passthrough file's atime after
// each read, a GETATTR at the next fstat. A cached small file costs OPEN and
// RELEASE only: its first open stores its data in the kernel's cache along
// with the reply (storePages), and lower data never changes, so the pages
// stay valid. Large files keep passthrough; their reads never come here.
const smallLowerFile = 256 << 10

// storeBufs spares a cold walk that reads thousands of small files one
// allocation of up to smallLowerFile each.
var storeBufs = sync.Pool{New: func() any { b := make([]byte, smallLowerFile); return &b }}

// storePages puts the data of the small lower file open as fd into the
// kernel's page cache of n before the OPEN reply goes out. Reading it the
// usual way would cost a READ request, and a READ makes the kernel drop the
// file's atime, so the next fstat would cost a GETATTR; a store does
// neither. Should the kernel evict the pages, it READs them again.
func (n *node) storePages(fd int, size int64) bool {
	if size <= 0 || size > smallLowerFile {
		return false
	}
	bp := storeBufs.Get().(*[]byte)
	defer storeBufs.Put(bp)
	k, err := unix.Pread(fd, (*bp)[:size], 0)
	if err != nil || int64(k) != size {
		return false
	}
	if errno := n.WriteCache(0, (*bp)[:k]); errno != 0 {
		n.u.log.Debugf("store of %d bytes in the page cache of inode %d: %v", k, n.StableAttr().Ino, errno)
		return false
	}
	return true
}

// Release closes the layer fd; the last handle on a lower object lets a
// later copy-up switch its node to the upper in place (no ESTALE and new
// lookup: after RELEASE the kernel holds no backing file of it).
func (f *file) Release(ctx context.Context) syscall.Errno {
	errno := f.LoopbackFile.Release(ctx)
	if n := f.lowerOf; n != nil {
		n.mu.Lock()
		n.lowerOpens--
		if f.cached {
			n.cachedOpens--
		}
		n.mu.Unlock()
	}
	return errno
}

func (f *file) fd() int       { return f.fdNum }
func (f *file) isUpper() bool { return f.upper }

// noPassthroughFile hides PassthroughFd when passthrough is turned off.
type noPassthroughFile struct{ *file }

func (noPassthroughFile) PassthroughFd() (int, bool) { return -1, false }

var (
	_ = (gofs.FilePassthroughFder)((*file)(nil))
	_ = (fileFd)((*file)(nil))
	_ = (gofs.FileGetattrer)((*file)(nil))
)

// Fsync is fsync(2) and fdatasync(2) through the mount (passthrough leaves
// them to the daemon); with NoSync they return at once, as the kernel's
// volatile overlay does.
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if f.noSync {
		return 0
	}
	return f.LoopbackFile.Fsync(ctx, flags)
}

// hardLinkedFile is an open name of a hard-linked lower file when
// passthrough is off. Each name has an Inode, and so a page cache, of its
// own (node.go), so a change through this name drops what the kernel cached
// for the others; until then they read old data (the kernel's overlayfs
// shows all names as one inode). With passthrough the kernel caches nothing.
type hardLinkedFile struct {
	noPassthroughFile
	n *node
}

var (
	_ = (gofs.FileWriter)(hardLinkedFile{})
	_ = (gofs.FileWritever)(hardLinkedFile{})
	_ = (gofs.FileAllocater)(hardLinkedFile{})
)

func (f hardLinkedFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	w, errno := f.noPassthroughFile.Write(ctx, data, off)
	if w > 0 {
		f.n.dropSiblingPages(f.fd())
	}
	return w, errno
}

func (f hardLinkedFile) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	w, errno := f.noPassthroughFile.Writev(ctx, data, off)
	if w > 0 {
		f.n.dropSiblingPages(f.fd())
	}
	return w, errno
}

func (f hardLinkedFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	errno := f.noPassthroughFile.Allocate(ctx, off, size, mode)
	if errno == 0 {
		f.n.dropSiblingPages(f.fd())
	}
	return errno
}

// dropSiblingPages tells the kernel to drop the cached pages and attributes
// of the other names of n's hard-linked file, after a change through fd. A
// file that grew also gets its new size at once (by storing its last byte
// in their caches): a mapping is checked against the size the kernel holds,
// which it does not ask for again, and would fault past the old end.
//
// It waits for that at most 100 ms: a write through another name that
// drops ours holds its pages locked until we answer, and answering unlocks
// ours. Typically all is done before the write returns.
func (n *node) dropSiblingPages(fd int) {
	sibs := n.u.hardLinkNodes(n.StableAttr().Ino, n)
	if len(sibs) == 0 {
		return
	}
	var st unix.Stat_t
	var last []byte
	if unix.Fstat(fd, &st) == nil && st.Size > 0 {
		b := make([]byte, 1)
		k, err := unix.Pread(fd, b, st.Size-1)
		if err == unix.EBADF { // opened write-only
			rfd, oerr := unix.Open(procPath(fd, ""), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if oerr == nil {
				k, err = unix.Pread(rfd, b, st.Size-1)
				unix.Close(rfd)
			}
		}
		if err == nil && k == 1 {
			last = b
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, m := range sibs {
			if last != nil {
				m.WriteCache(st.Size-1, last)
			}
			m.NotifyContent(0, 0)
		}
	}()
	select {
	case <-done:
	case <-time.After(100 * time.Millisecond):
	}
}

func (u *unionFS) newFile(fd int, upper bool) gofs.FileHandle {
	f := &file{LoopbackFile: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile), fdNum: fd, upper: upper, noSync: u.cfg.NoSync}
	if u.cfg.NoPassthrough {
		return noPassthroughFile{f}
	}
	return f
}

// noFlush spares the FLUSH request at every close(2) of a strata file: the
// daemon would only dup and close its layer fd, which flushes nothing on a
// local filesystem and releases no lock (locks are OFD locks on the layer fd,
// released with RELEASE). For `cat` of a small file that is one request of four.
const noFlush = uint32(fuse.FOPEN_NOFLUSH)

// fileOf is the *file inside a handle from newFile.
func fileOf(h gofs.FileHandle) *file {
	switch f := h.(type) {
	case *file:
		return f
	case noPassthroughFile:
		return f.file
	}
	return nil
}

func wantsWrite(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	write := wantsWrite(flags)
	n.mu.Lock()
	if n.stale {
		n.mu.Unlock()
		return nil, 0, syscall.ESTALE
	}
	// A write through a name of a hard-linked file gives that name its own
	// link to the copy (as the kernel does with index=on).
	if write && (!n.layer.upper || n.indexKey != "") {
		if n.u.upper == nil {
			n.mu.Unlock()
			return nil, 0, syscall.EROFS
		}
		n.mu.Unlock()
		if errno := n.copyUp(ctx, flags&syscall.O_TRUNC == 0, false); errno != 0 {
			return nil, 0, errno
		}
		n.mu.Lock()
		if n.stale {
			n.mu.Unlock()
			return nil, 0, syscall.ESTALE
		}
	}
	upper, hl := n.layer.upper, n.hardLinked
	if !upper {
		// Counted before the open, so that a copy-up racing with it
		// already treats the node as held.
		n.lowerOpens++
		// A small lower file whose data the kernel holds already: the
		// handle needs no layer fd unless the pages are evicted. The
		// mode follows the same rule as below (a live open decides).
		if !write && !hl && n.storedAt != "" && !n.stale &&
			(n.cachedOpens > 0 || n.lowerOpens == 1 || n.u.cfg.NoPassthrough) {
			n.cachedOpens++
			at := n.storedAt
			l := n.layer
			n.mu.Unlock()
			return &storedFile{n: n, root: l.root, path: at}, noFlush | fuse.FOPEN_KEEP_CACHE, 0
		}
	}
	n.mu.Unlock()
	unreserve := func() {
		if !upper {
			n.mu.Lock()
			n.lowerOpens--
			n.mu.Unlock()
		}
	}

	fd, name, from, errno := n.loc()
	if errno != 0 {
		unreserve()
		return nil, 0, errno
	}
	oflags := int(flags)&^(syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOCTTY) | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	ffd, err := retryEINTR(func() (int, error) { return unix.Openat(fd, name, oflags, 0) })
	if err != nil {
		unreserve()
		return nil, 0, toErrno(err)
	}
	fuseFlags := noFlush
	if !upper {
		// Lower data never changes: the page cache stays valid.
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	cached := false
	if !upper {
		var st unix.Stat_t
		small := unix.Fstat(ffd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size <= smallLowerFile
		n.mu.Lock()
		stale := n.stale
		// The kernel refuses a passthrough open of an Inode while cached
		// ones are live, and the reverse (ETXTBSY, EINVAL): a live open
		// decides.
		switch {
		case n.u.cfg.NoPassthrough:
			cached = true
		case !small:
		case n.cachedOpens > 0:
			cached = true
		case stale:
			// Copied up since the check above, and no lower stat
			// kept for a cached handle (node.lowerSt).
		case n.lowerOpens-1 == 0:
			cached = true
		}
		store := cached && small && !n.pagesStored
		if cached {
			n.cachedOpens++
		}
		n.pagesStored = n.pagesStored || store
		n.mu.Unlock()
		if store && n.storePages(ffd, st.Size) {
			if pname, p := n.parentNode(); p != nil {
				at := strings.TrimPrefix(p.lowerPathOf()+"/"+pname, "/")
				n.mu.Lock()
				if n.layer == from {
					n.storedAt = at
				}
				n.mu.Unlock()
				if !hl {
					// Its data is in the kernel's cache now: this
					// handle needs the fd no more than later ones.
					unix.Close(ffd)
					return &storedFile{n: n, root: from.root, path: at}, fuseFlags, 0
				}
			}
		}
	}
	h := n.u.newFile(ffd, upper)
	if f := fileOf(h); f != nil && !upper {
		f.lowerOf, f.cached = n, cached
	} else if !upper {
		unreserve() // cannot happen: newFile makes only these
	}
	if np, ok := h.(noPassthroughFile); ok && hl {
		h = hardLinkedFile{np, n}
		if flags&syscall.O_TRUNC != 0 {
			n.dropSiblingPages(ffd)
		}
	}
	return h, fuseFlags, 0
}

// storedFile is a read-only handle on a small lower file whose data
// storePages gave the kernel: reads come from the page cache, so the open
// costs no syscall here. A layer fd is opened only for what needs one: a
// READ once the kernel has evicted the pages, a lock, an lseek, an fstat.
// It is opened by the file's path below its layer's root, which stays valid
// whatever happens to the name in the mount (a lower file never changes:
// copy-up, rename and unlink leave it in place).
type storedFile struct {
	n    *node
	root int    // the layer's root fd
	path string // the file below it

	mu  sync.Mutex
	f   *file
	err syscall.Errno
}

var (
	_ = (gofs.FileReader)((*storedFile)(nil))
	_ = (gofs.FileLseeker)((*storedFile)(nil))
	_ = (gofs.FileGetlker)((*storedFile)(nil))
	_ = (gofs.FileSetlker)((*storedFile)(nil))
	_ = (gofs.FileSetlkwer)((*storedFile)(nil))
	_ = (gofs.FileFlusher)((*storedFile)(nil))
	_ = (gofs.FileFsyncer)((*storedFile)(nil))
	_ = (gofs.FileReleaser)((*storedFile)(nil))
	_ = (gofs.FileIoctler)((*storedFile)(nil))
	_ = (fileFd)((*storedFile)(nil))
)

func (s *storedFile) open() (*file, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil && s.err == 0 {
		fd, err := openBeneath(s.root, s.path, unix.O_RDONLY|unix.O_NOFOLLOW)
		if err != nil {
			s.err = toErrno(err)
			s.n.u.log.Warnf("reopen of lower file %s: %v", s.path, err)
		} else {
			s.f = &file{LoopbackFile: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile), fdNum: fd, cached: true}
		}
	}
	return s.f, s.err
}

func (s *storedFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f, errno := s.open()
	if errno != 0 {
		return nil, errno
	}
	return f.Read(ctx, buf, off)
}

func (s *storedFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	f, errno := s.open()
	if errno != 0 {
		return 0, errno
	}
	return f.Lseek(ctx, off, whence)
}

func (s *storedFile) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	f, errno := s.open()
	if errno != 0 {
		return errno
	}
	return f.Getlk(ctx, owner, lk, flags, out)
}

func (s *storedFile) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	f, errno := s.open()
	if errno != 0 {
		return errno
	}
	return f.Setlk(ctx, owner, lk, flags)
}

func (s *storedFile) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	f, errno := s.open()
	if errno != 0 {
		return errno
	}
	return f.Setlkw(ctx, owner, lk, flags)
}

func (s *storedFile) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	f, errno := s.open()
	if errno != 0 {
		return 0, errno
	}
	return f.Ioctl(ctx, cmd, arg, input, output)
}

// Flush and Fsync have nothing to do on a read-only lower file.
func (s *storedFile) Flush(ctx context.Context) syscall.Errno               { return 0 }
func (s *storedFile) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

// fd serves an fstat through the handle (node.Getattr); -1 if the layer
// file cannot be opened.
func (s *storedFile) fd() int {
	f, errno := s.open()
	if errno != 0 {
		return -1
	}
	return f.fdNum
}

func (s *storedFile) isUpper() bool { return false }

func (s *storedFile) Release(ctx context.Context) syscall.Errno {
	s.mu.Lock()
	f := s.f
	s.f, s.err = nil, syscall.EBADF
	s.mu.Unlock()
	if f != nil {
		f.LoopbackFile.Release(ctx)
	}
	n := s.n
	n.mu.Lock()
	n.lowerOpens--
	n.cachedOpens--
	n.mu.Unlock()
	return 0
}
