// Package fsstress is a random file-system operation mix in the spirit of
// xfstests' fsstress: one Worker per process, each drawing operations from a
// seeded generator over the names it knows (entries found under a few
// directories of the mount, plus what it created), against names other
// workers change at the same time. It checks nothing about the results
// itself beyond the errno: a caller compares the final tree with a reference
// (integration/load_test.go mounts the kernel's overlayfs on the same layers
// and upper). An errno that no correct file system gives for these calls
// (EIO, ENOTCONN, ESTALE, EBADF, EFAULT, ...) is recorded as unexpected.
package fsstress

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config is one worker's share of the load.
type Config struct {
	Root     string        // the mount point
	Dirs     []string      // directories (relative to Root) whose entries are operated on
	Scratch  string        // this worker's own directory (relative), made if missing
	Shared   string        // a directory every worker creates into and renames through (relative)
	Seed     int64         // the generator's seed
	Duration time.Duration // stop after this long (0: only Ops counts)
	Ops      int64         // stop after this many operations (0: only Duration counts)
	MaxNames int           // at most this many lower names are sampled per kind (default 4000)
	Log      io.Writer     // one line per unexpected errno (nil: none)
	// Chrooted says Root is "/" of a chroot: only then are symlinks made
	// that point at other entries (absolute or with ".."), since calls
	// that follow them must stay inside the tree.
	Chrooted bool
}

// Stats counts what a worker did.
type Stats struct {
	Ops        map[string]int64 // operations by name
	Errnos     map[string]int64 // "op ERRNO" for each failing call
	Unexpected []string         // the first unexpected failures, described
	NUnexp     int64            // how many unexpected failures in all
}

// Total is the number of operations run.
func (s *Stats) Total() int64 {
	var n int64
	for _, v := range s.Ops {
		n += v
	}
	return n
}

// expected lists the errnos a correct file system may give for an operation
// in this mix: names vanish and appear under other workers, types change,
// directories fill up, and a few calls are refused by design (link of a
// directory, user xattrs on symlinks, renaming a directory into itself).
var expected = map[syscall.Errno]bool{
	unix.ENOENT: true, unix.EEXIST: true, unix.ENOTEMPTY: true, unix.ENOTDIR: true,
	unix.EISDIR: true, unix.EINVAL: true, unix.EPERM: true, unix.ENODATA: true,
	unix.ELOOP: true, unix.EMLINK: true, unix.ENAMETOOLONG: true, unix.EBUSY: true,
	unix.ENXIO: true, unix.ETXTBSY: true, unix.EACCES: true, unix.ENOTSUP: true,
	unix.EXDEV: true, unix.ERANGE: true,
}

// Worker runs one process's operations.
type Worker struct {
	cfg   Config
	rng   *rand.Rand
	files []string // regular files (relative paths), as last known
	dirs  []string
	links []string
	fixed map[string]bool // directories never removed or renamed (the roots)
	seq   int
	// The name the running operation picked from a list: dropped when
	// the call finds it gone (another worker moved or removed it).
	lastList *[]string
	lastIdx  int
	stats    Stats
	buf      []byte
}

// New samples the names below cfg.Dirs and makes the scratch directories.
func New(cfg Config) (*Worker, error) {
	if cfg.MaxNames == 0 {
		cfg.MaxNames = 4000
	}
	w := &Worker{
		cfg:   cfg,
		rng:   rand.New(rand.NewSource(cfg.Seed)),
		fixed: map[string]bool{".": true},
		stats: Stats{Ops: map[string]int64{}, Errnos: map[string]int64{}},
		buf:   make([]byte, 256<<10),
	}
	for _, d := range []string{cfg.Shared, cfg.Scratch} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(cfg.Root, d), 0o755); err != nil {
			return nil, fmt.Errorf("making %s: %w", d, err)
		}
		w.fixed[d] = true
		w.fixed[filepath.Dir(d)] = true
		w.dirs = append(w.dirs, d)
	}
	var files, dirs, links []string
	for _, d := range cfg.Dirs {
		w.fixed[d] = true
		err := filepath.WalkDir(filepath.Join(cfg.Root, d), func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return nil // another worker moved it: skip
			}
			rel, _ := filepath.Rel(cfg.Root, p)
			switch {
			case e.IsDir():
				dirs = append(dirs, rel)
			case e.Type()&os.ModeSymlink != 0:
				links = append(links, rel)
			case e.Type().IsRegular():
				// A lower file with several names is left alone: strata
				// and the kernel keep the copy of a written hard link in
				// indexes of their own formats (see the README), which
				// the comparison with the kernel cannot see through.
				var st unix.Stat_t
				if unix.Lstat(p, &st) == nil && st.Nlink == 1 {
					files = append(files, rel)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walking %s: %w", d, err)
		}
	}
	w.files = w.sample(files, cfg.MaxNames)
	w.dirs = append(w.dirs, w.sample(dirs, cfg.MaxNames)...)
	w.links = w.sample(links, cfg.MaxNames)
	return w, nil
}

func (w *Worker) sample(names []string, n int) []string {
	sort.Strings(names)
	w.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	if len(names) > n {
		names = names[:n]
	}
	return names
}

// op is one kind of operation with its weight in the mix.
type op struct {
	name   string
	weight int
	run    func(w *Worker) error
}

var ops = []op{
	{"create", 8, (*Worker).create},
	{"write", 10, (*Worker).write},
	{"append", 6, (*Worker).append},
	{"truncate", 5, (*Worker).truncate},
	{"ftruncate", 3, (*Worker).ftruncate},
	{"rename", 6, (*Worker).rename},
	{"rename-dir", 3, (*Worker).renameDir},
	{"exchange", 1, (*Worker).exchange},
	{"unlink", 5, (*Worker).unlink},
	{"rmdir", 2, (*Worker).rmdir},
	{"mkdir", 4, (*Worker).mkdir},
	{"link", 4, (*Worker).link},
	{"symlink", 3, (*Worker).symlink},
	{"chmod", 4, (*Worker).chmod},
	{"chown", 3, (*Worker).chown},
	{"setxattr", 4, (*Worker).setxattr},
	{"removexattr", 2, (*Worker).removexattr},
	{"utimes", 3, (*Worker).utimes},
	{"readdir", 6, (*Worker).readdir},
	{"read", 10, (*Worker).read},
	{"stat", 6, (*Worker).stat},
	{"readlink", 2, (*Worker).readlink},
	{"mmap-write", 3, (*Worker).mmapWrite},
	{"open-unlink-write", 2, (*Worker).openUnlinkWrite},
	{"fsync", 1, (*Worker).fsync},
}

var totalWeight = func() int {
	n := 0
	for _, o := range ops {
		n += o.weight
	}
	return n
}()

// Run runs operations until the configured time or count is reached.
func (w *Worker) Run() Stats {
	// An mmap store into a file another worker truncated faults (SIGBUS):
	// turn that into a recoverable panic instead of a crash.
	debug.SetPanicOnFault(true)
	start := time.Now()
	for i := int64(0); ; i++ {
		if w.cfg.Ops > 0 && i >= w.cfg.Ops {
			break
		}
		if w.cfg.Duration > 0 && i%16 == 0 && time.Since(start) >= w.cfg.Duration {
			break
		}
		k := w.rng.Intn(totalWeight)
		for _, o := range ops {
			if k < o.weight {
				w.stats.Ops[o.name]++
				w.lastList = nil
				err := o.run(w)
				w.note(o.name, err)
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
					w.forgetLast()
				}
				break
			}
			k -= o.weight
		}
	}
	return w.stats
}

// note records a failure; err carries the path in its text.
func (w *Worker) note(name string, err error) {
	if err == nil {
		return
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		w.unexpected(name, err)
		return
	}
	w.stats.Errnos[name+" "+unix.ErrnoName(errno)]++
	if !expected[errno] {
		w.unexpected(name, err)
	}
}

func (w *Worker) unexpected(name string, err error) {
	w.stats.NUnexp++
	line := fmt.Sprintf("%s: %v", name, err)
	if len(w.stats.Unexpected) < 20 {
		w.stats.Unexpected = append(w.stats.Unexpected, line)
	}
	if w.cfg.Log != nil {
		fmt.Fprintln(w.cfg.Log, "UNEXPECTED", line)
	}
}

// ---------------------------------------------------------------------------
// Names

func (w *Worker) abs(rel string) string { return filepath.Join(w.cfg.Root, rel) }

func pick(r *rand.Rand, names []string) (string, int) {
	if len(names) == 0 {
		return "", -1
	}
	i := r.Intn(len(names))
	return names[i], i
}

func (w *Worker) pickFile() (string, int) { return w.pickFrom(&w.files) }
func (w *Worker) pickLink() (string, int) { return w.pickFrom(&w.links) }
func (w *Worker) pickDir() string         { d, _ := w.pickFrom(&w.dirs); return d }
func remove(s []string, i int) []string   { s[i] = s[len(s)-1]; return s[:len(s)-1] }
func (w *Worker) dropFile(i int)          { w.files = remove(w.files, i) }
func (w *Worker) dropLink(i int)          { w.links = remove(w.links, i) }
func (w *Worker) addFile(p string)        { w.files = append(w.files, p) }
func (w *Worker) pickFrom(list *[]string) (string, int) {
	p, i := pick(w.rng, *list)
	w.lastList, w.lastIdx = list, i
	return p, i
}

// forgetLast drops the name the operation picked last, unless it is one of
// the fixed directories.
func (w *Worker) forgetLast() {
	l, i := w.lastList, w.lastIdx
	if l == nil || i < 0 || i >= len(*l) || w.fixed[(*l)[i]] {
		return
	}
	*l = remove(*l, i)
}

func (w *Worker) newName(kind string) string {
	w.seq++
	return fmt.Sprintf("%s%x_%d", kind, w.cfg.Seed&0xffff, w.seq)
}

// anyEntry picks a name of any kind: a file mostly.
func (w *Worker) anyEntry() string {
	switch w.rng.Intn(8) {
	case 0, 1:
		return w.pickDir()
	case 2:
		if l, i := w.pickLink(); i >= 0 {
			return l
		}
	}
	f, _ := w.pickFile()
	return f
}

// newPath is a fresh name in a random known directory (the scratch and
// shared ones half of the time).
func (w *Worker) newPath(kind string) string {
	d := w.pickDir()
	if w.rng.Intn(2) == 0 && w.cfg.Scratch != "" {
		d = w.cfg.Scratch
		if w.rng.Intn(2) == 0 && w.cfg.Shared != "" {
			d = w.cfg.Shared
		}
	}
	return filepath.Join(d, w.newName(kind))
}

func (w *Worker) data(n int) []byte {
	if n > len(w.buf) {
		n = len(w.buf)
	}
	b := w.buf[:n]
	w.rng.Read(b)
	return b
}

// size is a write or file size: mostly small, sometimes up to 256 KiB.
func (w *Worker) size() int {
	switch w.rng.Intn(10) {
	case 0:
		return w.rng.Intn(256 << 10)
	case 1, 2, 3:
		return w.rng.Intn(16 << 10)
	default:
		return w.rng.Intn(1024)
	}
}

func pathErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return &os.PathError{Op: op, Path: p, Err: errno}
	}
	return fmt.Errorf("%s %s: %w", op, p, err)
}

func retry(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

func openat(p string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
		if err != unix.EINTR {
			return fd, err
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
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// ---------------------------------------------------------------------------
// Operations

func (w *Worker) create() error {
	var p string
	flags := unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY
	if w.rng.Intn(3) == 0 {
		// A known name, maybe removed meanwhile: made again over its
		// whiteout, or truncated.
		p, _ = w.pickFile()
		flags = unix.O_CREAT | unix.O_TRUNC | unix.O_WRONLY | unix.O_NOFOLLOW
	}
	if p == "" {
		p, flags = w.newPath("f"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY
	}
	fd, err := openat(w.abs(p), flags, uint32(0o600+w.rng.Intn(0o200)))
	if err != nil {
		return pathErr("create", p, err)
	}
	if flags&unix.O_EXCL != 0 {
		w.addFile(p)
	}
	err = writeAll(fd, w.data(w.size()))
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return pathErr("create/write", p, err)
}

func (w *Worker) write() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	fd, err := openat(w.abs(p), unix.O_WRONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return pathErr("fstat", p, err)
	}
	off := w.rng.Int63n(st.Size + 4096)
	return pathErr("pwrite", p, pwriteAll(fd, w.data(w.size()), off))
}

func (w *Worker) append() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	fd, err := openat(w.abs(p), unix.O_WRONLY|unix.O_APPEND|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	return pathErr("append", p, writeAll(fd, w.data(w.size())))
}

func (w *Worker) truncate() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(w.abs(p), &st); err != nil {
		return pathErr("lstat", p, err)
	}
	n := w.rng.Int63n(2*st.Size + 4096)
	return pathErr("truncate", p, retry(func() error { return unix.Truncate(w.abs(p), n) }))
}

func (w *Worker) ftruncate() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	flags := unix.O_RDWR
	if w.rng.Intn(4) == 0 {
		flags |= unix.O_TRUNC
	}
	fd, err := openat(w.abs(p), flags|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	return pathErr("ftruncate", p, unix.Ftruncate(fd, int64(w.size())))
}

// rename moves a file or symlink to a new name or over an existing file,
// in the same or another directory.
func (w *Worker) rename() error {
	var p string
	var i int
	isLink := w.rng.Intn(4) == 0
	if isLink {
		p, i = w.pickLink()
	} else {
		p, i = w.pickFile()
	}
	if i < 0 {
		return nil
	}
	q := w.newPath("r")
	if w.rng.Intn(3) == 0 {
		if f, j := w.pickFile(); j >= 0 && f != p {
			q = f // over an existing file
		}
	}
	if err := retry(func() error { return unix.Rename(w.abs(p), w.abs(q)) }); err != nil {
		return pathErr("rename "+p+" ->", q, err)
	}
	if isLink {
		w.links[i] = q
	} else {
		w.files[i] = q
	}
	return nil
}

// renameDir moves a directory to a new name in another directory, or over
// an empty one.
func (w *Worker) renameDir() error {
	p := w.pickDir()
	if w.fixed[p] {
		return nil
	}
	q := filepath.Join(w.pickDir(), w.newName("D"))
	if w.rng.Intn(4) == 0 {
		q = w.pickDir() // over an existing (empty) directory, or EINVAL/ENOTEMPTY
	}
	if w.fixed[q] {
		return nil
	}
	if err := retry(func() error { return unix.Rename(w.abs(p), w.abs(q)) }); err != nil {
		return pathErr("rename "+p+" ->", q, err)
	}
	// Every known name below p moved with it.
	for _, set := range [][]string{w.files, w.dirs, w.links} {
		for k, s := range set {
			if s == p {
				set[k] = q
			} else if strings.HasPrefix(s, p+"/") {
				set[k] = q + s[len(p):]
			}
		}
	}
	return nil
}

func (w *Worker) exchange() error {
	p, q := w.anyEntry(), w.anyEntry()
	if p == "" || q == "" || p == q || w.fixed[p] || w.fixed[q] {
		return nil
	}
	err := retry(func() error {
		return unix.Renameat2(unix.AT_FDCWD, w.abs(p), unix.AT_FDCWD, w.abs(q), unix.RENAME_EXCHANGE)
	})
	// The names stay; what they hold swapped. The lists keep the names, whose
	// kinds may now be wrong: the calls then fail with the expected errnos.
	return pathErr("exchange "+p+" <->", q, err)
}

func (w *Worker) unlink() error {
	var p string
	if w.rng.Intn(4) == 0 {
		l, i := w.pickLink()
		if i < 0 {
			return nil
		}
		p = l
		w.dropLink(i)
	} else {
		f, i := w.pickFile()
		if i < 0 {
			return nil
		}
		p = f
		// Keep the name known (half of the time) so that it comes back
		// as a new file over a whiteout.
		if w.rng.Intn(2) == 0 {
			w.dropFile(i)
		}
	}
	w.lastList = nil // dropped already, or kept on purpose
	return pathErr("unlink", p, retry(func() error { return unix.Unlink(w.abs(p)) }))
}

func (w *Worker) rmdir() error {
	p := w.pickDir()
	if w.fixed[p] {
		return nil
	}
	return pathErr("rmdir", p, retry(func() error { return unix.Rmdir(w.abs(p)) }))
}

func (w *Worker) mkdir() error {
	p := w.newPath("d")
	if w.rng.Intn(4) == 0 {
		// A name that may have been removed: the new directory is opaque.
		p = w.pickDir()
	}
	err := retry(func() error { return unix.Mkdir(w.abs(p), uint32(0o700+w.rng.Intn(0o100))) })
	if err == nil {
		w.dirs = append(w.dirs, p)
	}
	return pathErr("mkdir", p, err)
}

func (w *Worker) link() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	q := w.newPath("h")
	err := retry(func() error { return unix.Link(w.abs(p), w.abs(q)) })
	if err == nil {
		w.addFile(q)
	}
	return pathErr("link "+p+" ->", q, err)
}

func (w *Worker) symlink() error {
	q := w.newPath("l")
	target := w.anyEntry()
	k := w.rng.Intn(3)
	if !w.cfg.Chrooted {
		k = 2
	}
	switch k {
	case 0:
		target = "/" + target
	case 1:
		if rel, err := filepath.Rel(filepath.Dir(q), target); err == nil {
			target = rel
		}
	default:
		target = "dangling-" + w.newName("t")
	}
	err := retry(func() error { return unix.Symlink(target, w.abs(q)) })
	if err == nil {
		w.links = append(w.links, q)
	}
	return pathErr("symlink", q, err)
}

func (w *Worker) chmod() error {
	p := w.anyEntry()
	if p == "" {
		return nil
	}
	mode := uint32(w.rng.Intn(0o7777 + 1))
	if w.rng.Intn(2) == 0 {
		mode &= 0o777
	}
	return pathErr("chmod", p, retry(func() error { return unix.Chmod(w.abs(p), mode) }))
}

var ids = []int{0, 1, 100, 1000, 65534}

func (w *Worker) chown() error {
	p := w.anyEntry()
	if l, i := w.pickLink(); i >= 0 && w.rng.Intn(4) == 0 {
		p = l
	}
	if p == "" {
		return nil
	}
	uid, gid := ids[w.rng.Intn(len(ids))], ids[w.rng.Intn(len(ids))]
	if w.rng.Intn(3) == 0 {
		uid = -1
	}
	return pathErr("lchown", p, retry(func() error { return unix.Lchown(w.abs(p), uid, gid) }))
}

func (w *Worker) xattrName() string {
	ns := "user."
	if w.rng.Intn(4) == 0 {
		ns = "trusted."
	}
	return fmt.Sprintf("%sstress.%d", ns, w.rng.Intn(4))
}

func (w *Worker) setxattr() error {
	p := w.anyEntry()
	if p == "" {
		return nil
	}
	name := w.xattrName()
	val := w.data(1 + w.rng.Intn(200))
	flags := 0
	switch w.rng.Intn(6) {
	case 0:
		flags = unix.XATTR_CREATE
	case 1:
		flags = unix.XATTR_REPLACE
	}
	return pathErr("lsetxattr "+name, p, retry(func() error { return unix.Lsetxattr(w.abs(p), name, val, flags) }))
}

func (w *Worker) removexattr() error {
	p := w.anyEntry()
	if p == "" {
		return nil
	}
	name := w.xattrName()
	return pathErr("lremovexattr "+name, p, retry(func() error { return unix.Lremovexattr(w.abs(p), name) }))
}

func (w *Worker) utimes() error {
	p := w.anyEntry()
	if p == "" {
		return nil
	}
	ts := []unix.Timespec{
		{Sec: 1e9 + w.rng.Int63n(1e9), Nsec: w.rng.Int63n(1e9)},
		{Sec: 1e9 + w.rng.Int63n(1e9), Nsec: w.rng.Int63n(1e9)},
	}
	if w.rng.Intn(4) == 0 {
		ts[1].Nsec = unix.UTIME_OMIT
	}
	flags := 0
	if w.rng.Intn(2) == 0 {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	return pathErr("utimensat", p, retry(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, w.abs(p), ts, flags) }))
}

func (w *Worker) readdir() error {
	p := w.pickDir()
	fd, err := openat(w.abs(p), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return pathErr("opendir", p, err)
	}
	defer unix.Close(fd)
	seen := map[string]bool{}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathErr("getdents", p, err)
		}
		if n == 0 {
			break
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			if seen[name] {
				return fmt.Errorf("readdir %s: %q listed twice", p, name)
			}
			seen[name] = true
		}
	}
	// Learn names other workers made or moved here, so that they are
	// worked on too.
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	w.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, n := range names[:min(len(names), 8)] {
		var st unix.Stat_t
		if unix.Lstat(w.abs(filepath.Join(p, n)), &st) == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				if st.Nlink == 1 {
					w.addFile(filepath.Join(p, n))
				}
			case unix.S_IFDIR:
				w.dirs = append(w.dirs, filepath.Join(p, n))
			case unix.S_IFLNK:
				w.links = append(w.links, filepath.Join(p, n))
			}
		}
	}
	return nil
}

func (w *Worker) read() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	fd, err := openat(w.abs(p), unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	var total int
	for total < 1<<20 {
		n, err := unix.Read(fd, w.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathErr("read", p, err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	return nil
}

func (w *Worker) stat() error {
	p := w.anyEntry()
	if p == "" {
		return nil
	}
	var st unix.Stat_t
	return pathErr("lstat", p, unix.Lstat(w.abs(p), &st))
}

func (w *Worker) readlink() error {
	p, i := w.pickLink()
	if i < 0 {
		return nil
	}
	_, err := os.Readlink(w.abs(p))
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return pathErr("readlink", p, err)
}

// mmapWrite changes a few bytes of a file through a shared mapping.
func (w *Worker) mmapWrite() (err error) {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	fd, err := openat(w.abs(p), unix.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return pathErr("fstat", p, err)
	}
	if st.Size == 0 {
		return nil
	}
	size := int(min(st.Size, 4<<20))
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return pathErr("mmap", p, err)
	}
	defer unix.Munmap(m)
	defer func() {
		// Another worker truncated the file under the mapping: the
		// store faulted (SIGBUS), as it must.
		if r := recover(); r != nil {
			w.stats.Errnos["mmap-write SIGBUS"]++
			err = nil
		}
	}()
	for k := 0; k < 1+w.rng.Intn(8); k++ {
		off := w.rng.Intn(size)
		n := min(size-off, 1+w.rng.Intn(4096))
		copy(m[off:off+n], w.data(n))
	}
	return pathErr("msync", p, unix.Msync(m, unix.MS_SYNC))
}

// openUnlinkWrite writes to a file whose name is removed (or replaced) while
// it is open, and reads and fstats it through the same fd.
func (w *Worker) openUnlinkWrite() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	fd, err := openat(w.abs(p), unix.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	if w.rng.Intn(2) == 0 {
		err = retry(func() error { return unix.Unlink(w.abs(p)) })
		w.dropFile(i)
	} else {
		q := w.newPath("o")
		if f, j := w.pickFile(); j >= 0 {
			q = f
		}
		err = retry(func() error { return unix.Rename(w.abs(q), w.abs(p)) })
	}
	if err != nil && err != unix.ENOENT {
		return pathErr("unlink/replace", p, err)
	}
	// Another worker may hold the same file open (or another name of it),
	// so what reads back is not checked here (the fsx exerciser checks
	// data): the calls must work on the orphaned file.
	off := w.rng.Int63n(8192)
	if err := pwriteAll(fd, w.data(1+w.rng.Intn(4096)), off); err != nil {
		return pathErr("pwrite after unlink", p, err)
	}
	if _, err := unix.Pread(fd, w.buf[:4096], off); err != nil {
		return pathErr("pread after unlink", p, err)
	}
	var st unix.Stat_t
	return pathErr("fstat after unlink", p, unix.Fstat(fd, &st))
}

func (w *Worker) fsync() error {
	p, i := w.pickFile()
	if i < 0 {
		return nil
	}
	fd, err := openat(w.abs(p), unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	if w.rng.Intn(2) == 0 {
		return pathErr("fdatasync", p, unix.Fdatasync(fd))
	}
	return pathErr("fsync", p, unix.Fsync(fd))
}
