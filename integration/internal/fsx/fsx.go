// Package fsx is a data-verification exerciser in the spirit of fsx (the
// file system exerciser of BSD and xfstests): random reads, writes,
// truncates, mmap reads and writes and fallocate calls (allocate, keep
// size, punch hole, zero range) on a few files, each checked against an
// in-memory model of what the file must hold: the range an operation
// touched is read back after every step, the whole file and its size every
// few steps, with fsync, close and reopen, page-cache drops and an
// occasional drop_caches mixed in. On a mismatch it reports the seed, the
// step, the first differing byte and the last operations.
package fsx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Config says what to exercise and for how long.
type Config struct {
	Files          []string      // the files (absolute paths); each must exist
	Initial        [][]byte      // what each file holds at the start (its model)
	Seed           int64         // the generator's seed
	Ops            int64         // stop after this many operations (0: only Duration counts)
	Duration       time.Duration // stop after this long (0: only Ops counts)
	MaxSize        int64         // largest file size an operation makes (default 8 MiB)
	MaxIO          int           // largest read or write (default 256 KiB)
	FullCheckEvery int64         // compare every whole file after this many steps (default 500)
	DropCaches     func() error  // drops the kernel's caches (nil: never); called every DropEvery steps
	DropEvery      int64         // default 5000
	Log            io.Writer     // progress lines (nil: none)
	// Aliases: file i is another name (a hard link) of file Aliases[i],
	// an earlier one; a write through one name must show through all.
	Aliases map[int]int

	// corrupt, set by this package's tests, changes a file behind the
	// exerciser's back at one step, to prove a mismatch is caught.
	corrupt func(step int64, files []string)
}

// Result is what a run did.
type Result struct {
	Ops     int64            // operations run
	ByOp    map[string]int64 // operations by kind
	Elapsed time.Duration
	Skipped map[string]int64 // operations the file system refused with EOPNOTSUPP, by kind
	Final   [][]byte         // what each file must hold at the end (the models)
}

// Error is a mismatch between a file and its model (or a failing call).
type Error struct {
	Seed    int64
	Step    int64
	Problem string
	LastOps []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("fsx seed %d, step %d: %s\nlast %d operations (oldest first):\n  %s",
		e.Seed, e.Step, e.Problem, len(e.LastOps), strings.Join(e.LastOps, "\n  "))
}

// content is what a file must hold; the names of one hard-linked file
// share it.
type content struct {
	b      []byte
	copied bool // opened for writing once: copied up to the upper layer
}

// fileState is one name: its model and its open fd.
type fileState struct {
	path     string
	m        *content
	fd       int
	writable bool
	stale    bool // a read-only fd opened before the file was copied up
}

type runner struct {
	cfg    Config
	rng    *rand.Rand
	files  []*fileState
	step   int64
	log    []string // ring of the last operations
	logPos int
	res    Result
	buf    []byte
	noOp   map[string]bool // kinds the file system does not support
}

const keepOps = 50

// Run exercises the files until the configured count or time is reached.
// It returns an *Error on the first mismatch.
func Run(cfg Config) (Result, error) {
	if cfg.MaxSize == 0 {
		cfg.MaxSize = 8 << 20
	}
	if cfg.MaxIO == 0 {
		cfg.MaxIO = 256 << 10
	}
	if cfg.FullCheckEvery == 0 {
		cfg.FullCheckEvery = 500
	}
	if cfg.DropEvery == 0 {
		cfg.DropEvery = 5000
	}
	if len(cfg.Files) == 0 || len(cfg.Files) != len(cfg.Initial) {
		return Result{}, errors.New("fsx: need files and their initial contents")
	}
	r := &runner{
		cfg:  cfg,
		rng:  rand.New(rand.NewSource(cfg.Seed)),
		res:  Result{ByOp: map[string]int64{}, Skipped: map[string]int64{}},
		buf:  make([]byte, cfg.MaxIO),
		noOp: map[string]bool{},
		log:  make([]string, keepOps),
	}
	for i, p := range cfg.Files {
		m := &content{b: append([]byte(nil), cfg.Initial[i]...)}
		if j, ok := cfg.Aliases[i]; ok {
			if j >= i {
				return Result{}, fmt.Errorf("fsx: alias %d of %d: must name an earlier file", i, j)
			}
			m = r.files[j].m
		}
		r.files = append(r.files, &fileState{path: p, m: m, fd: -1})
	}
	defer func() {
		for _, f := range r.files {
			if f.fd >= 0 {
				unix.Close(f.fd)
			}
		}
	}()
	start := time.Now()
	// The files as they start, read through fresh read-only fds.
	for _, f := range r.files {
		if err := r.open(f, false); err != nil {
			return r.res, err
		}
		if err := r.checkWhole(f, "initial"); err != nil {
			return r.res, err
		}
	}
	lastLog := start
	// A mapped access the kernel refuses (SIGBUS: a page it thinks is
	// past the end of the file) is a failure to report, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	for r.step = 1; ; r.step++ {
		if cfg.Ops > 0 && r.step > cfg.Ops {
			break
		}
		if cfg.Duration > 0 && r.step%64 == 0 && time.Since(start) >= cfg.Duration {
			break
		}
		f := r.files[r.rng.Intn(len(r.files))]
		if err := r.oneGuarded(f); err != nil {
			r.res.Elapsed = time.Since(start)
			return r.res, err
		}
		r.res.Ops++
		if cfg.corrupt != nil {
			cfg.corrupt(r.step, cfg.Files)
		}
		if r.step%cfg.FullCheckEvery == 0 {
			for _, g := range r.files {
				if err := r.checkWhole(g, "periodic"); err != nil {
					r.res.Elapsed = time.Since(start)
					return r.res, err
				}
			}
		}
		if cfg.DropCaches != nil && r.step%cfg.DropEvery == 0 {
			r.record("drop_caches")
			if err := cfg.DropCaches(); err != nil {
				return r.res, r.fail("drop_caches: %v", err)
			}
		}
		if cfg.Log != nil && time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			fmt.Fprintf(cfg.Log, "fsx: %d operations in %v\n", r.step, time.Since(start).Round(time.Second))
		}
	}
	for _, f := range r.files {
		if err := r.checkWhole(f, "final"); err != nil {
			return r.res, err
		}
	}
	r.res.Elapsed = time.Since(start)
	for _, f := range r.files {
		r.res.Final = append(r.res.Final, f.m.b)
	}
	return r.res, nil
}

func (r *runner) record(format string, args ...any) {
	r.log[r.logPos%keepOps] = fmt.Sprintf("%d: ", r.step) + fmt.Sprintf(format, args...)
	r.logPos++
}

func (r *runner) fail(format string, args ...any) error {
	var last []string
	for i := 0; i < keepOps; i++ {
		if s := r.log[(r.logPos+i)%keepOps]; s != "" {
			last = append(last, s)
		}
	}
	return &Error{Seed: r.cfg.Seed, Step: r.step, Problem: fmt.Sprintf(format, args...), LastOps: last}
}

func short(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// open (re)opens f, read-only or read-write. A file of a lower layer is
// first opened read-only, so that reads of the lower copy are checked before
// the first write copies it up.
func (r *runner) open(f *fileState, writable bool) error {
	if f.fd >= 0 {
		if err := unix.Close(f.fd); err != nil {
			return r.fail("close %s: %v", short(f.path), err)
		}
		f.fd = -1
	}
	flags := unix.O_RDONLY
	if writable {
		flags = unix.O_RDWR
	}
	fd, err := retryFd(func() (int, error) { return unix.Open(f.path, flags|unix.O_CLOEXEC, 0) })
	if err != nil {
		return r.fail("open %s (%s): %v", short(f.path), map[bool]string{false: "ro", true: "rw"}[writable], err)
	}
	f.fd, f.writable, f.stale = fd, writable, !writable && !f.m.copied
	if writable && !f.m.copied {
		f.m.copied = true
		// A read-only fd of another name opened before this copy-up
		// still reads the lower file (as on the kernel's overlayfs):
		// it is opened again.
		for _, g := range r.files {
			if g != f && g.m == f.m && g.fd >= 0 && g.stale {
				r.record("reopen %s ro after the copy-up", short(g.path))
				if err := r.open(g, false); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func retryFd(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}

func (r *runner) needWrite(f *fileState) error {
	if f.writable {
		return nil
	}
	r.record("reopen %s rw", short(f.path))
	return r.open(f, true)
}

// resize makes the model n bytes long (new bytes are zero).
func (f *fileState) resize(n int64) {
	if n <= int64(len(f.m.b)) {
		f.m.b = f.m.b[:n]
		return
	}
	if n <= int64(cap(f.m.b)) {
		old := len(f.m.b)
		f.m.b = f.m.b[:n]
		clear(f.m.b[old:])
		return
	}
	m := make([]byte, n, n+n/4)
	copy(m, f.m.b)
	f.m.b = m
}

func (r *runner) randRange(size int64, max int) (off int64, n int) {
	// Mostly in or near the file, sometimes at page or hole boundaries,
	// sometimes far past its end.
	switch r.rng.Intn(8) {
	case 0:
		off = r.rng.Int63n(r.cfg.MaxSize)
	case 1:
		off = (r.rng.Int63n(size+1) / 4096) * 4096
	default:
		off = r.rng.Int63n(size + 1)
	}
	n = 1 + r.rng.Intn(max)
	if r.rng.Intn(4) == 0 {
		n = 1 + r.rng.Intn(64)
	}
	if off+int64(n) > r.cfg.MaxSize {
		n = int(r.cfg.MaxSize - off)
	}
	return off, n
}

// oneGuarded is one, with a memory fault in a mapping turned into an error.
func (r *runner) oneGuarded(f *fileState) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = r.fail("fault in a mapping of %s (size %d in the model): %v", short(f.path), len(f.m.b), v)
		}
	}()
	return r.one(f)
}

// one runs one random operation on f and checks it.
func (r *runner) one(f *fileState) error {
	size := int64(len(f.m.b))
	k := r.rng.Intn(100)
	var kind string
	switch {
	case k < 25:
		kind = "read"
	case k < 50:
		kind = "write"
	case k < 57:
		kind = "truncate"
	case k < 66:
		kind = "mapread"
	case k < 75:
		kind = "mapwrite"
	case k < 79:
		kind = "fallocate"
	case k < 83:
		kind = "fallocate-keep"
	case k < 89:
		kind = "punch"
	case k < 92:
		kind = "zero"
	case k < 94:
		kind = "fsync"
	case k < 96:
		kind = "reopen"
	case k < 98:
		kind = "fadvise"
	default:
		kind = "read-newfd"
	}
	if r.noOp[kind] {
		kind = "read"
	}
	r.res.ByOp[kind]++
	switch kind {
	case "read":
		off, n := r.randRange(size, r.cfg.MaxIO)
		r.record("read %s %d+%d", short(f.path), off, n)
		return r.checkRange(f, f.fd, off, n, "read")
	case "read-newfd":
		off, n := r.randRange(size, r.cfg.MaxIO)
		r.record("read %s %d+%d through a new fd", short(f.path), off, n)
		fd, err := retryFd(func() (int, error) { return unix.Open(f.path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
		if err != nil {
			return r.fail("open %s: %v", short(f.path), err)
		}
		defer unix.Close(fd)
		return r.checkRange(f, fd, off, n, "read through a new fd")
	case "write":
		if err := r.needWrite(f); err != nil {
			return err
		}
		off, n := r.randRange(size, r.cfg.MaxIO)
		if n <= 0 {
			return nil
		}
		data := r.buf[:n]
		r.rng.Read(data)
		r.record("write %s %d+%d (size %d)", short(f.path), off, n, size)
		if err := pwriteAll(f.fd, data, off); err != nil {
			return r.fail("pwrite %s %d+%d: %v", short(f.path), off, n, err)
		}
		if end := off + int64(n); end > size {
			f.resize(end)
		}
		copy(f.m.b[off:], data)
		return r.checkAfter(f, off, n)
	case "truncate":
		n := r.rng.Int63n(r.cfg.MaxSize + 1)
		if r.rng.Intn(2) == 0 {
			n = r.rng.Int63n(size + 1) // shrink, mostly
		}
		if r.rng.Intn(2) == 0 {
			// A read-only fd opened before a copy-up keeps reading the
			// lower file (as on the kernel's overlayfs): the file is
			// first opened for writing, which copies it up.
			if err := r.needWrite(f); err != nil {
				return err
			}
			r.record("truncate(path) %s %d -> %d", short(f.path), size, n)
			if err := retry(func() error { return unix.Truncate(f.path, n) }); err != nil {
				return r.fail("truncate %s %d: %v", short(f.path), n, err)
			}
		} else {
			if err := r.needWrite(f); err != nil {
				return err
			}
			r.record("ftruncate %s %d -> %d", short(f.path), size, n)
			if err := retry(func() error { return unix.Ftruncate(f.fd, n) }); err != nil {
				return r.fail("ftruncate %s %d: %v", short(f.path), n, err)
			}
		}
		f.resize(n)
		return r.checkAfter(f, max(0, min(size, n)-4096), 8192)
	case "mapread":
		if size == 0 {
			return nil
		}
		off, n := r.randRange(size, r.cfg.MaxIO)
		if off >= size {
			off = r.rng.Int63n(size)
		}
		n = int(min(int64(n), size-off))
		r.record("mapread %s %d+%d", short(f.path), off, n)
		return r.mapRead(f, off, n)
	case "mapwrite":
		if err := r.needWrite(f); err != nil {
			return err
		}
		off, n := r.randRange(size, r.cfg.MaxIO)
		if n <= 0 {
			return nil
		}
		r.record("mapwrite %s %d+%d (size %d)", short(f.path), off, n, size)
		if end := off + int64(n); end > size {
			// A mapping cannot extend a file: grow it first, as fsx does.
			if err := retry(func() error { return unix.Ftruncate(f.fd, end) }); err != nil {
				return r.fail("ftruncate %s %d for mapwrite: %v", short(f.path), end, err)
			}
			f.resize(end)
		}
		data := r.buf[:n]
		r.rng.Read(data)
		if err := mapWrite(f.fd, off, data, r.rng.Intn(2) == 0); err != nil {
			return r.fail("mapwrite %s %d+%d: %v", short(f.path), off, n, err)
		}
		copy(f.m.b[off:], data)
		return r.checkAfter(f, off, n)
	case "fallocate", "fallocate-keep", "punch", "zero":
		if err := r.needWrite(f); err != nil {
			return err
		}
		off, n := r.randRange(size, 1<<20)
		if n <= 0 {
			return nil
		}
		var mode uint32
		switch kind {
		case "fallocate-keep":
			mode = unix.FALLOC_FL_KEEP_SIZE
		case "punch":
			mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
		case "zero":
			mode = unix.FALLOC_FL_ZERO_RANGE
			if r.rng.Intn(2) == 0 {
				mode |= unix.FALLOC_FL_KEEP_SIZE
			}
		}
		r.record("fallocate %s mode %#x %d+%d (size %d)", short(f.path), mode, off, n, size)
		err := retry(func() error { return unix.Fallocate(f.fd, mode, off, int64(n)) })
		if err == unix.EOPNOTSUPP {
			r.noOp[kind] = true
			r.res.Skipped[kind]++
			return nil
		}
		if err != nil {
			return r.fail("fallocate %s mode %#x %d+%d: %v", short(f.path), mode, off, n, err)
		}
		end := off + int64(n)
		switch {
		case mode&unix.FALLOC_FL_PUNCH_HOLE != 0 || mode&unix.FALLOC_FL_ZERO_RANGE != 0:
			if off < size {
				clear(f.m.b[off:min(end, size)])
			}
			if mode&unix.FALLOC_FL_KEEP_SIZE == 0 && end > size {
				f.resize(end)
			}
		case mode&unix.FALLOC_FL_KEEP_SIZE == 0 && end > size:
			f.resize(end)
		}
		return r.checkAfter(f, off, n)
	case "fsync":
		r.record("fsync %s", short(f.path))
		fn := unix.Fsync
		if r.rng.Intn(2) == 0 {
			fn = unix.Fdatasync
		}
		if err := retry(func() error { return fn(f.fd) }); err != nil {
			return r.fail("fsync %s: %v", short(f.path), err)
		}
		return r.checkSize(f, "after fsync")
	case "reopen":
		w := f.writable
		if r.rng.Intn(3) == 0 {
			w = !w
		}
		r.record("close+reopen %s (rw=%v)", short(f.path), w)
		if err := r.open(f, w); err != nil {
			return err
		}
		return r.checkSize(f, "after reopen")
	case "fadvise":
		r.record("fadvise DONTNEED %s", short(f.path))
		// Drops the file's clean pages: the next read asks the file
		// system again.
		if err := unix.Fadvise(f.fd, 0, 0, unix.FADV_DONTNEED); err != nil {
			return r.fail("fadvise %s: %v", short(f.path), err)
		}
		return nil
	}
	return nil
}

func retry(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// preadFull reads until n bytes or end of file.
func preadFull(fd int, b []byte, off int64) (int, error) {
	got := 0
	for got < len(b) {
		n, err := unix.Pread(fd, b[got:], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		if n == 0 {
			break
		}
		got += n
	}
	return got, nil
}

// checkAfter reads back what an operation touched, through the operation's
// fd, and checks the size.
func (r *runner) checkAfter(f *fileState, off int64, n int) error {
	if err := r.checkSize(f, "after the operation"); err != nil {
		return err
	}
	if f.fd >= 0 {
		return r.checkRange(f, f.fd, off, n, "read back")
	}
	return nil
}

func (r *runner) checkSize(f *fileState, when string) error {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return r.fail("fstat %s: %v", short(f.path), err)
	}
	if st.Size != int64(len(f.m.b)) {
		return r.fail("%s: fstat %s: size %d, want %d", when, short(f.path), st.Size, len(f.m.b))
	}
	return nil
}

// checkRange reads [off, off+n) through fd and compares it with the model
// (a read past the end must come back short).
func (r *runner) checkRange(f *fileState, fd int, off int64, n int, what string) error {
	if n > len(r.buf) {
		n = len(r.buf)
	}
	got, err := preadFull(fd, r.buf[:n], off)
	if err != nil {
		return r.fail("%s %s %d+%d: %v", what, short(f.path), off, n, err)
	}
	size := int64(len(f.m.b))
	want := []byte{}
	if off < size {
		want = f.m.b[off:min(size, off+int64(n))]
	}
	return r.compare(f, what, off, r.buf[:got], want)
}

func (r *runner) compare(f *fileState, what string, off int64, got, want []byte) error {
	if bytes.Equal(got, want) {
		return nil
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return r.fail("%s %s at %d: %d bytes, want %d; first difference at offset %d: got %s, want %s",
		what, short(f.path), off, len(got), len(want), off+int64(i), snippet(got, i), snippet(want, i))
}

func snippet(b []byte, i int) string {
	if i >= len(b) {
		return "(end)"
	}
	return fmt.Sprintf("% x", b[i:min(len(b), i+16)])
}

// checkWhole compares the whole file, read through a fresh fd, and its size.
func (r *runner) checkWhole(f *fileState, when string) error {
	fd, err := retryFd(func() (int, error) { return unix.Open(f.path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return r.fail("%s check: open %s: %v", when, short(f.path), err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return r.fail("%s check: fstat %s: %v", when, short(f.path), err)
	}
	if st.Size != int64(len(f.m.b)) {
		return r.fail("%s check: %s has size %d, want %d", when, short(f.path), st.Size, len(f.m.b))
	}
	got := make([]byte, len(f.m.b)+1)
	n, err := preadFull(fd, got, 0)
	if err != nil {
		return r.fail("%s check: read %s: %v", when, short(f.path), err)
	}
	return r.compare(f, when+" check of the whole file", 0, got[:n], f.m.b)
}

// mapRead compares a mapped range with the model.
func (r *runner) mapRead(f *fileState, off int64, n int) error {
	pg := int64(os.Getpagesize())
	base := off / pg * pg
	m, err := unix.Mmap(f.fd, base, int(off-base)+n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return r.fail("mmap %s %d+%d: %v", short(f.path), off, n, err)
	}
	defer unix.Munmap(m)
	return r.compare(f, "mapread", off, m[off-base:], f.m.b[off:off+int64(n)])
}

func mapWrite(fd int, off int64, data []byte, sync bool) error {
	pg := int64(os.Getpagesize())
	base := off / pg * pg
	m, err := unix.Mmap(fd, base, int(off-base)+len(data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	unmapped := false
	defer func() {
		if !unmapped { // a fault: the mapping must not keep the mount busy
			unix.Munmap(m)
		}
	}()
	copy(m[off-base:], data)
	if sync {
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return fmt.Errorf("msync: %w", err)
		}
	}
	unmapped = true
	return unix.Munmap(m)
}
