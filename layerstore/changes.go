package layerstore

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What a writable layer changed, and that change as an OCI layer.
//
// The writable layer (upper) is in the on-disk format that the fs package
// writes and the kernel's overlayfs reads: whiteouts are 0/0 character
// devices (or .wh.NAME files), a directory that was removed and made again
// is opaque, a lower directory renamed is an upper directory with a
// redirect xattr naming where its lower instances are, and a hard-linked
// lower file that was copied up lives in work/index, where every name of it
// that was not copied up yet finds it. A plain walk of the upper therefore
// misses changes (the other names of an indexed file, everything inside a
// renamed directory) and an OCI layer cannot express a redirect. So changes
// are found by comparing two trees built with the mount's resolution rules
// (the same as fs's lookup and readdir, for the parts that differ): M, the
// upper over the lowers, as the mount shows it, and L, the lowers alone, as
// the image is. The comparison descends only where M can differ from L:
// into directories with an upper instance or whose lower instances are not
// L's (a redirect), and everywhere when work/index holds anything.
//
// The same comparison gives both outputs: docker diff lines (A/C/D against
// L) and the layer tar (entries that, applied over L, give M): changed and
// new entries, a .wh.NAME whiteout for each name of L that M lacks, and a
// .wh..wh..opq marker plus the whole content for a directory of M that does
// not merge L's directory of the same path (opaque, or moved there by a
// rename).

// UpperLayers is a writable layer and the read-only layers under it.
type UpperLayers struct {
	Upper string // the writable layer
	// Work is the upper's work directory; "" when unknown. Its index/ holds
	// hard-linked lower files that were copied up, which every name of them
	// then shows.
	Work   string
	Lowers []string // top-most first (overlayfs' lowerdir order)
}

// ChangeKind is docker diff's letter.
type ChangeKind byte

const (
	ChangeModify ChangeKind = 'C'
	ChangeAdd    ChangeKind = 'A'
	ChangeDelete ChangeKind = 'D'
)

func (k ChangeKind) String() string { return string(rune(k)) }

// MarshalText makes a ChangeKind its letter in JSON.
func (k ChangeKind) MarshalText() ([]byte, error) { return []byte{byte(k)}, nil }

// Change is one line of docker diff.
type Change struct {
	Path string     `json:"path"` // absolute: /etc/passwd
	Kind ChangeKind `json:"kind"`
}

// Diff lists what the writable layer changes compared with its lowers, the
// way docker diff does: A for a name the lowers do not have, C for a name
// that changed (a directory counts as changed when anything below it did),
// D for a name of the lowers that is gone (whited out, or hidden by an
// opaque directory). Sorted by path, parents first.
func Diff(src UpperLayers) ([]Change, error) {
	u, err := openUnion(src)
	if err != nil {
		return nil, err
	}
	defer u.close()
	recs, err := u.changes()
	if err != nil {
		return nil, err
	}
	out := []Change{}
	for _, r := range recs {
		if r.kind != 0 {
			out = append(out, Change{Path: r.path, Kind: r.kind})
		}
	}
	return out, nil
}

// --- the union of layer directories ------------------------------------------

type ulayer struct {
	path  string
	fd    int // directory fd of the layer root
	upper bool
	num   int // 0 is the upper when there is one, lowers follow top-down
}

// unionSet is the set of layers of one comparison.
type unionSet struct {
	upper     *ulayer // nil: none
	lowers    []*ulayer
	index     int // fd of work/index, -1 when none
	indexed   bool
	prefix    string // "trusted.overlay." or "user.overlay."
	redirAttr string
}

func openLayerDir(p string) (int, error) {
	return unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func openUnion(src UpperLayers) (*unionSet, error) {
	u := &unionSet{index: -1, prefix: "trusted.overlay."}
	if !Privileged() {
		u.prefix = "user.overlay." // as fs does for unprivileged mounts
	}
	u.redirAttr = u.prefix + "redirect"
	if src.Upper == "" {
		return nil, fmt.Errorf("no upper directory")
	}
	fd, err := openLayerDir(src.Upper)
	if err != nil {
		return nil, fmt.Errorf("upper %s: %w", src.Upper, err)
	}
	u.upper = &ulayer{path: src.Upper, fd: fd, upper: true}
	for i, p := range src.Lowers {
		fd, err := openLayerDir(p)
		if err != nil {
			u.close()
			return nil, fmt.Errorf("lower %s: %w", p, err)
		}
		u.lowers = append(u.lowers, &ulayer{path: p, fd: fd, num: i + 1})
	}
	if src.Work != "" {
		fd, err := openLayerDir(src.Work + "/index")
		if err == nil {
			u.index = fd
			names, _ := namesAt(fd)
			u.indexed = len(names) > 0
		} else if !errors.Is(err, unix.ENOENT) {
			u.close()
			return nil, fmt.Errorf("work %s: %w", src.Work, err)
		}
	}
	return u, nil
}

func (u *unionSet) close() {
	if u.upper != nil {
		unix.Close(u.upper.fd)
	}
	for _, l := range u.lowers {
		unix.Close(l.fd)
	}
	if u.index >= 0 {
		unix.Close(u.index)
	}
}

// dinst is one layer's instance of a merged directory.
type dinst struct {
	l   *ulayer
	fd  int
	rel string // path inside the layer, "" for its root
}

// udir is a merged directory: its instances top-down.
type udir struct {
	insts     []dinst
	lowerPath string // where a lower instance is looked for ("" is the root)
}

func (d *udir) close() {
	if d == nil {
		return
	}
	for _, in := range d.insts {
		unix.Close(in.fd)
	}
	d.insts = nil
}

func (d *udir) hasUpper() bool { return d != nil && len(d.insts) > 0 && d.insts[0].l.upper }

// lowerInsts are the instances below the upper one.
func (d *udir) lowerInsts() []dinst {
	if d.hasUpper() {
		return d.insts[1:]
	}
	return d.insts
}

// roots returns the merged root (upper and lowers) and the lowers' root.
func (u *unionSet) roots() (m, l *udir, err error) {
	m, l = &udir{}, &udir{}
	open := func(d *udir, ly *ulayer) error {
		fd, err := openat2(ly.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		d.insts = append(d.insts, dinst{l: ly, fd: fd})
		return nil
	}
	if err := open(m, u.upper); err != nil {
		return nil, nil, err
	}
	for _, ly := range u.lowers {
		if err := open(m, ly); err != nil {
			m.close()
			l.close()
			return nil, nil, err
		}
		if err := open(l, ly); err != nil {
			m.close()
			l.close()
			return nil, nil, err
		}
		if u.isOpaque(l.insts[len(l.insts)-1].fd) {
			break
		}
	}
	return m, l, nil
}

func isWhiteoutStat(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

// isOpaque mirrors fs: either overlay xattr "y", or an AUFS marker.
func (u *unionSet) isOpaque(fd int) bool {
	var b [4]byte
	for _, a := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Fgetxattr(fd, a, b[:]); err == nil && n == 1 && b[0] == 'y' {
			return true
		}
	}
	var st unix.Stat_t
	return fstatat(fd, ".wh..wh..opq", &st) == nil
}

func whitedOutAUFS(fd int, name string) bool {
	if len(name)+4 > nameMax {
		return false
	}
	var st unix.Stat_t
	return fstatat(fd, ".wh."+name, &st) == nil
}

// namesAt lists the directory held by fd through a fresh open.
func namesAt(fd int) ([]string, error) {
	dfd, err := openat2(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	return readDirNames(dfd)
}

func xattrFD(fd int, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Fgetxattr(fd, name, buf)
		if err == unix.ERANGE {
			sz, err := unix.Fgetxattr(fd, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+1)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// uent is what a name resolves to in a merged directory.
type uent struct {
	name  string
	st    unix.Stat_t
	l     *ulayer // the layer providing it; the upper for an indexed file
	root  int     // fd the entry is found under with rel (a layer root, or work/index)
	rel   string
	dir   *udir // directories: their merged instances (owned by the caller)
	index bool  // resolved to work/index
}

func (e *uent) isDir() bool { return e.st.Mode&unix.S_IFMT == unix.S_IFDIR }

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// lookup resolves name in d the way fs's resolve does: top-down, a whiteout
// or a non-directory ends the search, directories merge until an opaque one,
// and an upper directory with a redirect takes its lower instances from the
// redirect's path. With index, a hard-linked lower file that has a copy in
// work/index resolves to that copy.
func (u *unionSet) lookup(d *udir, name string, index bool) (*uent, error) {
	var e *uent
	var dirs []dinst
	fail := func(err error) (*uent, error) {
		for _, in := range dirs {
			unix.Close(in.fd)
		}
		return nil, err
	}
	lowerPath := ""
	for i, in := range d.insts {
		var st unix.Stat_t
		err := fstatat(in.fd, name, &st)
		if err == unix.ENOENT {
			if whitedOutAUFS(in.fd, name) {
				break
			}
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w", path.Join(in.l.path, in.rel, name), err))
		}
		if isWhiteoutStat(&st) {
			break
		}
		rel := joinRel(in.rel, name)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if len(dirs) == 0 {
				e = &uent{name: name, st: st, l: in.l, root: in.l.fd, rel: rel}
			}
			break
		}
		fd, err := openat2(in.fd, name, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", path.Join(in.l.path, rel), err))
		}
		if len(dirs) == 0 {
			e = &uent{name: name, st: st, l: in.l, root: in.l.fd, rel: rel}
			lowerPath = d.lowerPath + "/" + name
		}
		dirs = append(dirs, dinst{l: in.l, fd: fd, rel: rel})
		if u.isOpaque(fd) {
			break
		}
		if in.l.upper && i == 0 {
			if v, err := xattrFD(fd, u.redirAttr); err == nil && len(v) > 0 {
				lowerPath = redirectTarget(d.lowerPath, string(v))
				more, err := u.redirected(lowerPath)
				if err != nil {
					return fail(err)
				}
				dirs = append(dirs, more...)
				break
			}
		}
	}
	if e == nil {
		return nil, nil
	}
	if len(dirs) > 0 {
		e.dir = &udir{insts: dirs, lowerPath: lowerPath}
	}
	if index && u.index >= 0 && !e.l.upper && e.st.Mode&unix.S_IFMT == unix.S_IFREG && e.st.Nlink > 1 {
		key := strconv.FormatUint(e.st.Dev, 16) + "-" + strconv.FormatUint(e.st.Ino, 16)
		var ist unix.Stat_t
		if fstatat(u.index, key, &ist) == nil {
			e.st, e.l, e.root, e.rel, e.index = ist, u.upper, u.index, key, true
		}
	}
	return e, nil
}

// redirectTarget turns a redirect value into a lower path (fs's redirectPath).
func redirectTarget(parent, v string) string {
	if strings.HasPrefix(v, "/") {
		return strings.TrimRight(v, "/")
	}
	return parent + "/" + v
}

// redirected opens the lower instances of a renamed directory (fs's
// appendRedirected).
func (u *unionSet) redirected(lowerPath string) ([]dinst, error) {
	rel := strings.TrimPrefix(lowerPath, "/")
	var out []dinst
	for _, l := range u.lowers {
		p := rel
		if p == "" {
			p = "."
		}
		fd, err := openat2(l.fd, p, unix.O_RDONLY|unix.O_DIRECTORY)
		if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP || err == unix.EXDEV {
			continue
		}
		if err != nil {
			for _, in := range out {
				unix.Close(in.fd)
			}
			return nil, fmt.Errorf("redirect %s in %s: %w", lowerPath, l.path, err)
		}
		out = append(out, dinst{l: l, fd: fd, rel: rel})
		if u.isOpaque(fd) {
			break
		}
	}
	return out, nil
}

// listing lists the visible names of d once each, sorted (fs's mergedListing).
func (u *unionSet) listing(d *udir) ([]string, error) {
	if d == nil {
		return nil, nil
	}
	seen := map[string]bool{}
	var out []string
	for _, in := range d.insts {
		names, err := namesAt(in.fd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path.Join(in.l.path, in.rel), err)
		}
		var hidden []string
		opaque := false
		for _, n := range names {
			if strings.HasPrefix(n, ".wh.") {
				if n == ".wh..wh..opq" {
					opaque = true
				} else if !strings.HasPrefix(n, ".wh..wh.") {
					hidden = append(hidden, n[4:])
				}
				continue
			}
			if seen[n] {
				continue
			}
			seen[n] = true
			var st unix.Stat_t
			if fstatat(in.fd, n, &st) == nil && isWhiteoutStat(&st) {
				continue
			}
			out = append(out, n)
		}
		for _, h := range hidden {
			seen[h] = true
		}
		if opaque {
			break
		}
	}
	sort.Strings(out)
	return out, nil
}

// --- the comparison ------------------------------------------------------------

// emitKind says what the layer tar holds for a record.
type emitKind byte

const (
	emitNone     emitKind = iota
	emitEntry             // the entry itself, from src
	emitWhiteout          // .wh.NAME
)

// changeRec is one path of the comparison, in tar/path order.
type changeRec struct {
	path   string     // "/a/b"
	kind   ChangeKind // 0: no diff line (emitted only, under an opaque dir)
	emit   emitKind
	opaque bool // a directory: .wh..wh..opq follows it
	st     unix.Stat_t
	root   int    // fd src is found under
	rel    string // src path under root
}

// changes compares M and L from the root.
func (u *unionSet) changes() ([]changeRec, error) {
	m, l, err := u.roots()
	if err != nil {
		return nil, err
	}
	defer m.close()
	defer l.close()
	recs, _, _, err := u.walk("", m, l, false)
	return recs, err
}

// sameInsts reports whether M's directory merges exactly L's instances.
func sameInsts(m, l *udir) bool {
	a := m.lowerInsts()
	if len(a) != len(l.insts) {
		return false
	}
	for i := range a {
		if a[i].l != l.insts[i].l || a[i].rel != l.insts[i].rel {
			return false
		}
	}
	return true
}

type childPair struct {
	name   string
	me, le *uent
}

// walk compares directory p of M (m) with that of L (l, nil when L has no
// directory there). replace says the new layer hides whatever is below p,
// so every entry of m is emitted and no whiteout is needed. It returns the
// records of p's descendants, whether any differs from L, and whether p
// itself had to be replaced (a deleted name too long for a whiteout).
func (u *unionSet) walk(p string, m, l *udir, replace bool) (recs []changeRec, changed, replaced bool, err error) {
	names, err := u.listing(m)
	if err != nil {
		return nil, false, false, err
	}
	if l != nil {
		ln, err := u.listing(l)
		if err != nil {
			return nil, false, false, err
		}
		names = mergeSorted(names, ln)
	}
	var pairs []childPair
	defer func() {
		for _, c := range pairs {
			if c.me != nil {
				c.me.dir.close()
			}
			if c.le != nil {
				c.le.dir.close()
			}
		}
	}()
	base := l != nil && !replace // the new layer goes on top of L's directory here
	for _, n := range names {
		var c childPair
		c.name = n
		if c.me, err = u.lookup(m, n, true); err != nil {
			return nil, false, false, err
		}
		if l != nil {
			if c.le, err = u.lookup(l, n, false); err != nil {
				if c.me != nil {
					c.me.dir.close()
				}
				return nil, false, false, err
			}
		}
		if c.me == nil && c.le == nil {
			continue
		}
		pairs = append(pairs, c)
		if base && c.me == nil && len(n)+4 > nameMax {
			// No whiteout can name it: hide the whole directory instead.
			replace, replaced, base = true, true, false
		}
	}
	for _, c := range pairs {
		cp := p + "/" + c.name
		me, le := c.me, c.le
		switch {
		case me == nil: // gone
			r := changeRec{path: cp, kind: ChangeDelete}
			if base {
				r.emit = emitWhiteout
			}
			recs = append(recs, r)
			changed = true
		case le == nil: // new
			recs = append(recs, u.rec(cp, ChangeAdd, me))
			changed = true
			if me.isDir() {
				sub, _, _, err := u.walk(cp, me.dir, nil, true)
				if err != nil {
					return nil, false, false, err
				}
				recs = append(recs, sub...)
			}
		case !me.isDir():
			same := !me.index && me.l == le.l && me.rel == le.rel
			if same && !replace {
				continue
			}
			var kind ChangeKind
			if !same {
				kind, changed = ChangeModify, true
			}
			recs = append(recs, u.rec(cp, kind, me))
		case !le.isDir(): // a directory replaced a file
			recs = append(recs, u.rec(cp, ChangeModify, me))
			changed = true
			sub, _, _, err := u.walk(cp, me.dir, nil, true)
			if err != nil {
				return nil, false, false, err
			}
			recs = append(recs, sub...)
		default: // a directory on both sides
			merges := sameInsts(me.dir, le.dir)
			if merges && !me.dir.hasUpper() && !u.indexed && !replace {
				continue // nothing below can differ
			}
			sub, subChanged, subReplaced, err := u.walk(cp, me.dir, le.dir, replace || !merges)
			if err != nil {
				return nil, false, false, err
			}
			differs := subChanged || !merges || u.dirMetaDiffers(me, le)
			r := u.rec(cp, 0, me)
			if differs {
				r.kind, changed = ChangeModify, true
			}
			r.opaque = base && (!merges || subReplaced)
			if r.kind == 0 && !replace && !r.opaque {
				continue
			}
			recs = append(recs, r)
			recs = append(recs, sub...)
		}
	}
	return recs, changed, replaced, nil
}

func (u *unionSet) rec(p string, kind ChangeKind, e *uent) changeRec {
	return changeRec{path: p, kind: kind, emit: emitEntry, st: e.st, root: e.root, rel: e.rel}
}

func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j >= len(b) || (i < len(a) && a[i] < b[j]):
			out = append(out, a[i])
			i++
		case i >= len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// dirMetaDiffers compares what a layer tar carries of a directory.
func (u *unionSet) dirMetaDiffers(m, l *uent) bool {
	a, b := &m.st, &l.st
	if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Mtim != b.Mtim {
		return true
	}
	xa, _ := u.xattrsOf(m.dir.insts[0].fd, "")
	xb, _ := u.xattrsOf(l.dir.insts[0].fd, "")
	if len(xa) != len(xb) {
		return true
	}
	for i := range xa {
		if xa[i][0] != xb[i][0] || xa[i][1] != xb[i][1] {
			return true
		}
	}
	return false
}

// privateXattr: overlay bookkeeping (opaque, redirect, origin, index,
// escaped user names) never goes into a layer.
func privateXattr(name string) bool { return skipXattr(name) && !encodedXattr(name) }

// xattrsOf returns the non-private xattrs, sorted: of the directory or
// regular file fd itself when name is "", else of entry name in directory
// fd (not followed).
func (u *unionSet) xattrsOf(fd int, name string) ([][2]string, error) {
	// The object itself through its fd; an entry through its directory's
	// fd in /proc, the l* calls not following the entry.
	list := func(b []byte) (int, error) { return unix.Flistxattr(fd, b) }
	get := func(a string, b []byte) (int, error) { return unix.Fgetxattr(fd, a, b) }
	if name != "" {
		p := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + name
		list = func(b []byte) (int, error) { return unix.Llistxattr(p, b) }
		get = func(a string, b []byte) (int, error) { return unix.Lgetxattr(p, a, b) }
	}
	sz, err := list(nil)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, err
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz+64)
	sz, err = list(buf)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, n := range bytes.Split(buf[:sz], []byte{0}) {
		if len(n) == 0 || privateXattr(string(n)) {
			continue
		}
		vsz, err := get(string(n), nil)
		if err != nil {
			if err == unix.ENODATA {
				continue
			}
			return nil, err
		}
		v := make([]byte, vsz)
		if vsz > 0 {
			vsz, err = get(string(n), v)
			if err != nil {
				return nil, err
			}
		}
		out = append(out, [2]string{string(n), string(v[:vsz])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out, nil
}
