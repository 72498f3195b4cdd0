package layerstore

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The extractor applies one layer tar to an empty directory, producing the
// kernel overlayfs format. Every syscall is relative to a directory fd that
// was opened beneath the layer root with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS,
// and the final component is never followed (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW,
// O_EXCL creation). See doc.go for why this is not github.com/moby/go-archive.

const (
	pathMax = 4096
	nameMax = 255
)

// contentEntry is one line of a layer's contents.jsonl, the content
// manifest a later fsck checks the extracted tree against. Entries are in
// tar order; a later entry for the same path replaces the earlier one.
type contentEntry struct {
	Path   string            `json:"p"`
	Type   string            `json:"t"` // f file, d dir, l symlink, h hardlink, c/b device, p fifo, w whiteout, o opaque marker
	Mode   uint32            `json:"m,omitempty"`
	UID    int               `json:"u,omitempty"`
	GID    int               `json:"g,omitempty"`
	Size   int64             `json:"s,omitempty"`
	SHA256 string            `json:"h,omitempty"`
	Link   string            `json:"l,omitempty"`
	Rdev   string            `json:"r,omitempty"`
	MTime  int64             `json:"t_ns,omitempty"`
	Xattrs map[string]string `json:"x,omitempty"` // hex values
}

type dirMeta struct {
	mode         uint32
	atime, mtime time.Time
}

type extractor struct {
	root        int // O_PATH fd of the layer root
	root0       bool
	opaqueXattr string
	warn        func(format string, args ...any)

	dirs    map[string]dirMeta // applied after all entries, deepest first
	entries []contentEntry
	buf     []byte
	fileSum hash.Hash

	// one-entry cache of the last parent dir fd
	cacheDir string
	cacheFD  int
}

func newExtractor(rootFD int, root0 bool, warn func(string, ...any)) *extractor {
	x := &extractor{root: rootFD, root0: root0, warn: warn, dirs: map[string]dirMeta{},
		buf: make([]byte, 1<<20), fileSum: sha256.New(), cacheFD: -1}
	x.opaqueXattr = "user.overlay.opaque"
	if root0 {
		x.opaqueXattr = "trusted.overlay.opaque"
	}
	if x.warn == nil {
		x.warn = func(string, ...any) {}
	}
	return x
}

func (x *extractor) close() {
	x.dropCache()
}

func (x *extractor) dropCache() {
	if x.cacheFD >= 0 {
		unix.Close(x.cacheFD)
	}
	x.cacheFD, x.cacheDir = -1, ""
}

func unsafePath(name, why string) error {
	return fmt.Errorf("%q: %s: %w", name, why, ErrUnsafePath)
}

// cleanName turns a tar name into a clean path relative to the layer root
// ("" for the root itself). Leading "/" and "./" are dropped the way tar and
// docker drop them; a name that climbs out with ".." is refused.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", unsafePath(name, "NUL in name")
	}
	if len(name) >= pathMax {
		return "", unsafePath(name[:64]+"...", fmt.Sprintf("name of %d bytes exceeds PATH_MAX", len(name)))
	}
	p := path.Clean("/" + name)
	if strings.Contains(name, "..") {
		// Clean("/"+x) can not climb above "/", so compare with a relative clean.
		if c := path.Clean(strings.TrimLeft(name, "/")); c == ".." || strings.HasPrefix(c, "../") {
			return "", unsafePath(name, "climbs out of the layer with ..")
		}
	}
	p = strings.TrimPrefix(p, "/")
	for _, c := range strings.Split(p, "/") {
		if len(c) > nameMax {
			return "", unsafePath(name[:64]+"...", "component longer than NAME_MAX")
		}
	}
	return p, nil
}

// whiteoutKind is what a layer entry's name says about whiteouts.
type whiteoutKind int

const (
	notWhiteout  whiteoutKind = iota // an ordinary entry
	whiteoutFile                     // .wh.NAME: NAME is deleted from the layers below
	opaqueMarker                     // .wh..wh..opq: its directory hides the layers below
	aufsMeta                         // .wh..wh.* (plnk, aufs) or anything under it: AUFS bookkeeping
)

// decodeWhiteout classifies a layer entry by its cleaned path (as
// cleanName returns it) and gives what it acts on: for whiteoutFile the
// path of the hidden entry, for opaqueMarker the directory ("" is the
// layer root). It is a pure function of the name, so it can be fuzzed on
// its own. Names no layer can mean are refused with ErrUnsafePath: a
// whiteout of "", "." or "..", and a path that goes through a whiteout or
// opaque marker as if it were a directory.
func decodeWhiteout(name string) (whiteoutKind, string, error) {
	comps := strings.Split(name, "/")
	for _, c := range comps[:len(comps)-1] {
		if !strings.HasPrefix(c, ".wh.") {
			continue
		}
		if strings.HasPrefix(c, ".wh..wh.") && c != ".wh..wh..opq" {
			return aufsMeta, "", nil
		}
		return notWhiteout, "", unsafePath(name, "whiteout marker used as a directory")
	}
	base := comps[len(comps)-1]
	dir := strings.Join(comps[:len(comps)-1], "/")
	switch {
	case !strings.HasPrefix(base, ".wh."):
		return notWhiteout, "", nil
	case base == ".wh..wh..opq":
		return opaqueMarker, dir, nil
	case strings.HasPrefix(base, ".wh..wh."):
		return aufsMeta, "", nil
	}
	hidden := base[len(".wh."):]
	if hidden == "" || hidden == "." || hidden == ".." {
		return notWhiteout, "", unsafePath(name, "bad whiteout name")
	}
	return whiteoutFile, path.Join(dir, hidden), nil
}

const resolveHow = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func openat2(dirfd int, p string, flags uint64) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, p, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolveHow})
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return fd, err
	}
}

// parent returns an O_PATH fd for dir (relative to the root), creating
// missing directories (0755, as docker does for implied parents). The fd is
// owned by the cache: do not close it.
func (x *extractor) parent(dir string, create bool) (int, error) {
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		return x.root, nil
	}
	if x.cacheFD >= 0 && x.cacheDir == dir {
		return x.cacheFD, nil
	}
	fd, err := openat2(x.root, dir, unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) && create {
		fd, err = x.mkdirAll(dir)
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
			return -1, unsafePath(dir, "a parent directory is a symlink")
		case errors.Is(err, unix.ENOTDIR):
			return -1, unsafePath(dir, "a parent is not a directory")
		case errors.Is(err, unix.ENOENT):
			return -1, unsafePath(dir, "no such directory in the layer")
		}
		return -1, fmt.Errorf("open %q: %w", dir, err)
	}
	x.dropCache()
	x.cacheDir, x.cacheFD = dir, fd
	return fd, nil
}

func (x *extractor) mkdirAll(dir string) (int, error) {
	fd, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	for _, c := range strings.Split(dir, "/") {
		nfd, err := openat2(fd, c, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				_ = unix.Fchmodat(fd, c, 0o755, 0)
				if err == nil && !x.root0 {
					err = x.setOverride(fd, c, overrideValue(0, 0, 0o755, "dir"))
				}
				if err == nil || errors.Is(err, unix.EEXIST) {
					nfd, err = openat2(fd, c, unix.O_PATH|unix.O_DIRECTORY)
				}
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = nfd
	}
	return fd, nil
}

// removeAt removes name in dirfd, recursively for directories, without
// following symlinks.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := openat2(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	_ = unix.Fchmod(fd, 0o700)
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

func readDirNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// apply applies one tar entry.
func (x *extractor) apply(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		// Headers archive/tar does not consume itself, vendor types:
		// skipped before they can replace anything.
		x.warn("layer entry %q: tar type %q ignored", name, string(hdr.Typeflag))
		return nil
	}
	if name == "" {
		if hdr.Typeflag != tar.TypeDir {
			return unsafePath(hdr.Name, "the layer root must be a directory")
		}
		return x.dir(x.root, "", ".", hdr, true)
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")

	// Whiteouts, OCI/AUFS form -> overlay form.
	kind, target, err := decodeWhiteout(name)
	if err != nil {
		return err
	}
	switch kind {
	case aufsMeta:
		return nil // AUFS bookkeeping (.wh..wh.plnk/..., .wh..wh.aufs): docker skips it too
	case opaqueMarker:
		if _, err := x.parent(dir, true); err != nil {
			return err
		}
		if err := x.setOpaque(dir); err != nil {
			return fmt.Errorf("%q: opaque: %w", name, err)
		}
		x.entries = append(x.entries, contentEntry{Path: dir, Type: "o"})
		return nil
	case whiteoutFile:
		pfd, err := x.parent(dir, true)
		if err != nil {
			return err
		}
		hidden := path.Base(target)
		if err := removeAt(pfd, hidden); err != nil {
			return fmt.Errorf("%q: %w", name, err)
		}
		x.dropCacheUnder(target)
		if err := unix.Mknodat(pfd, hidden, unix.S_IFCHR, 0); err != nil {
			if !errors.Is(err, unix.EPERM) || x.root0 {
				return fmt.Errorf("%q: whiteout: %w", name, err)
			}
			// Kernels before 5.8 refuse even 0/0 devices to a plain
			// user: keep the OCI form, which every reader accepts.
			return x.whiteoutFile(pfd, name, hidden, dir)
		}
		// Owner and times from the marker entry, so that the tree is a
		// function of the tar alone.
		if err := x.chown(pfd, hidden, hdr, false); err != nil {
			return err
		}
		if err := setTimesAt(pfd, hidden, atime(hdr), hdr.ModTime); err != nil {
			return err
		}
		x.entries = append(x.entries, contentEntry{Path: target, Type: "w"})
		return nil
	}

	pfd, err := x.parent(dir, true)
	if err != nil {
		return err
	}
	// An existing entry: a dir over a dir merges, anything else replaces.
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && hdr.Typeflag == tar.TypeDir {
			return x.dir(pfd, name, base, hdr, true)
		}
		if hdr.Typeflag == tar.TypeLink {
			if t, err := cleanName(hdr.Linkname); err == nil && t == name {
				return nil // a hard link to itself: nothing to do
			}
		}
		if err := removeAt(pfd, base); err != nil {
			return fmt.Errorf("%q: replacing: %w", name, err)
		}
		x.dropCacheUnder(name)
		if pfd, err = x.parent(dir, true); err != nil {
			return err
		}
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(pfd, name, base, hdr, false)
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont: // archive/tar reports TypeRegA as TypeReg
		return x.file(pfd, name, base, hdr, r)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 || len(hdr.Linkname) >= pathMax {
			return unsafePath(name, "bad symlink target")
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("%q: symlink: %w", name, err)
		}
		if err := x.chown(pfd, base, hdr, false); err != nil {
			return err
		}
		if err := x.setXattrsPath(pfd, base, name, hdr); err != nil {
			return err
		}
		e := x.entry(name, "l", hdr)
		e.Link = hdr.Linkname // for fsck --deep
		x.entries = append(x.entries, e)
		return setTimesAt(pfd, base, atime(hdr), hdr.ModTime)
	case tar.TypeLink:
		return x.hardlink(pfd, name, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return x.special(pfd, name, base, hdr)
	}
	return nil
}

// dropCacheUnder forgets the cached parent fd if it is p or below p.
func (x *extractor) dropCacheUnder(p string) {
	if x.cacheFD >= 0 && (x.cacheDir == p || strings.HasPrefix(x.cacheDir, p+"/")) {
		x.dropCache()
	}
}

func (x *extractor) entry(name, typ string, hdr *tar.Header) contentEntry {
	e := contentEntry{Path: name, Type: typ, Mode: tarMode(hdr), UID: hdr.Uid, GID: hdr.Gid, MTime: hdr.ModTime.UnixNano()}
	for k, v := range hdr.PAXRecords {
		if xn, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !skipXattr(xn) {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[xn] = hex.EncodeToString([]byte(v))
		}
	}
	return e
}

func tarMode(hdr *tar.Header) uint32 { return uint32(hdr.Mode) & 0o7777 }

func atime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

func (x *extractor) dir(pfd int, name, base string, hdr *tar.Header, exists bool) error {
	if !exists {
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("%q: mkdir: %w", name, err)
		}
	}
	// Owner and xattrs through a real fd of the directory (never a path).
	fd, err := openat2(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("%q: open: %w", name, err)
	}
	defer unix.Close(fd)
	if err := x.chown(fd, "", hdr, true); err != nil {
		return err
	}
	if err := x.setXattrsFD(fd, name, hdr); err != nil {
		return err
	}
	if !x.root0 {
		if err := x.setOverride(fd, "", overrideValue(hdr.Uid, hdr.Gid, tarMode(hdr), "dir")); err != nil {
			return fmt.Errorf("%q: %w", name, err)
		}
	}
	x.dirs[name] = dirMeta{mode: tarMode(hdr), atime: atime(hdr), mtime: hdr.ModTime}
	x.entries = append(x.entries, x.entry(name, "d", hdr))
	return nil
}

func (x *extractor) file(pfd int, name, base string, hdr *tar.Header, r io.Reader) error {
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("%q: create: %w", name, err)
	}
	defer unix.Close(fd)
	x.fileSum.Reset()
	var n int64
	for {
		m, rerr := r.Read(x.buf)
		if m > 0 {
			x.fileSum.Write(x.buf[:m])
			if err := writeFull(fd, x.buf[:m]); err != nil {
				return fmt.Errorf("%q: write: %w", name, err)
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%q: %w", name, rerr)
		}
	}
	// chown clears setuid/setgid and security.capability: chown, chmod, xattrs, times.
	if err := x.chown(fd, "", hdr, true); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, x.diskMode(tarMode(hdr), false)); err != nil {
		return fmt.Errorf("%q: chmod: %w", name, err)
	}
	if err := x.setXattrsFD(fd, name, hdr); err != nil {
		return err
	}
	if !x.root0 {
		if err := x.setOverride(fd, "", overrideValue(hdr.Uid, hdr.Gid, tarMode(hdr), "file")); err != nil {
			return fmt.Errorf("%q: %w", name, err)
		}
	}
	e := x.entry(name, "f", hdr)
	e.Size, e.SHA256 = n, hex.EncodeToString(x.fileSum.Sum(nil))
	x.entries = append(x.entries, e)
	return futimens(fd, atime(hdr), hdr.ModTime)
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (x *extractor) hardlink(pfd int, name, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link %q: %w", name, err)
	}
	if target == "" {
		return unsafePath(name, "hard link to the layer root")
	}
	tdir, tbase := path.Split(target)
	tdir = strings.TrimSuffix(tdir, "/")
	// The target's parent is opened separately: linkat would follow
	// symlinks in the middle of a multi-component old path.
	tfd, err := openat2(x.root, orDot(tdir), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return unsafePath(name, fmt.Sprintf("hard link target %q is not in the layer (%v)", hdr.Linkname, err))
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return unsafePath(name, fmt.Sprintf("hard link target %q is not (yet) in the layer", hdr.Linkname))
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return unsafePath(name, fmt.Sprintf("hard link to directory %q", hdr.Linkname))
	}
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return fmt.Errorf("%q: link to %q: %w", name, hdr.Linkname, err)
	}
	e := contentEntry{Path: name, Type: "h", Link: target}
	x.entries = append(x.entries, e)
	return nil
}

func orDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

func (x *extractor) special(pfd int, name, base string, hdr *tar.Header) error {
	var typ uint32
	var t string
	switch hdr.Typeflag {
	case tar.TypeChar:
		typ, t = unix.S_IFCHR, "c"
	case tar.TypeBlock:
		typ, t = unix.S_IFBLK, "b"
	default:
		typ, t = unix.S_IFIFO, "p"
	}
	if !x.root0 {
		return x.specialFile(pfd, name, base, hdr, t)
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, base, typ|tarMode(hdr), int(dev)); err != nil {
		return fmt.Errorf("%q: mknod: %w", name, err)
	}
	if err := x.chown(pfd, base, hdr, false); err != nil {
		return err
	}
	// The node was just created by us (mknodat never follows), so chmod of
	// the name cannot meet a symlink.
	if err := unix.Fchmodat(pfd, base, tarMode(hdr), 0); err != nil {
		return fmt.Errorf("%q: chmod: %w", name, err)
	}
	if err := x.setXattrsPath(pfd, base, name, hdr); err != nil {
		return err
	}
	e := x.entry(name, t, hdr)
	if t != "p" {
		e.Rdev = strconv.FormatInt(hdr.Devmajor, 10) + ":" + strconv.FormatInt(hdr.Devminor, 10)
	}
	x.entries = append(x.entries, e)
	return setTimesAt(pfd, base, atime(hdr), hdr.ModTime)
}

// chown sets the owner; with emptyPath, fd itself is changed.
func (x *extractor) chown(fd int, base string, hdr *tar.Header, emptyPath bool) error {
	if !x.root0 {
		return nil // owners are recorded in contents.jsonl only
	}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if emptyPath {
		flags |= unix.AT_EMPTY_PATH
		base = ""
	}
	if err := unix.Fchownat(fd, base, hdr.Uid, hdr.Gid, flags); err != nil {
		return fmt.Errorf("%q: chown %d:%d: %w", hdr.Name, hdr.Uid, hdr.Gid, err)
	}
	return nil
}

// skipXattr filters xattrs a layer must not carry: overlay's own (a layer
// could otherwise fake opaque dirs, redirects or metacopy).
func skipXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") ||
		strings.HasPrefix(name, overrideXattrPrefix) // rootless owners and xattrs (rootless.go): never from a layer
}

func xattrs(hdr *tar.Header) [][2]string {
	var out [][2]string
	for k, v := range hdr.PAXRecords {
		if xn, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !skipXattr(xn) {
			out = append(out, [2]string{xn, v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

func (x *extractor) xattrErr(name, xn string, err error) error {
	if !x.root0 && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP)) && !strings.HasPrefix(xn, "user.") {
		x.warn("layer entry %q: xattr %s skipped (not root)", name, xn)
		return nil
	}
	return fmt.Errorf("%q: setxattr %s: %w", name, xn, err)
}

func (x *extractor) setXattrsFD(fd int, name string, hdr *tar.Header) error {
	for _, kv := range xattrs(hdr) {
		kv[0] = x.xattrName(kv[0])
		if err := unix.Fsetxattr(fd, kv[0], []byte(kv[1]), 0); err != nil {
			if err := x.xattrErr(name, kv[0], err); err != nil {
				return err
			}
		}
	}
	return nil
}

// setXattrsPath sets xattrs on base in dirfd without following it: the
// path goes through /proc/self/fd/<dirfd>, which is the already resolved
// directory, and lsetxattr does not follow the last component.
func (x *extractor) setXattrsPath(dirfd int, base, name string, hdr *tar.Header) error {
	xs := xattrs(hdr)
	if len(xs) == 0 {
		return nil
	}
	p := "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + base
	for _, kv := range xs {
		kv[0] = x.xattrName(kv[0])
		if err := unix.Lsetxattr(p, kv[0], []byte(kv[1]), 0); err != nil {
			if errors.Is(err, unix.EPERM) && strings.HasPrefix(kv[0], "user.") {
				// The kernel allows user.* only on regular files and directories.
				x.warn("layer entry %q: xattr %s skipped (%v)", name, kv[0], err)
				continue
			}
			if err := x.xattrErr(name, kv[0], err); err != nil {
				return err
			}
		}
	}
	return nil
}

func (x *extractor) setOpaque(dir string) error {
	fd, err := openat2(x.root, orDot(dir), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsetxattr(fd, x.opaqueXattr, []byte("y"), 0)
}

// finish applies directory modes and times, deepest first, after all
// contents exist.
func (x *extractor) finish() error {
	x.dropCache()
	if err := x.markRoot(); err != nil {
		return err
	}
	paths := make([]string, 0, len(x.dirs))
	for p := range x.dirs {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		di, dj := strings.Count(paths[i], "/"), strings.Count(paths[j], "/")
		if paths[i] == "" || paths[j] == "" {
			return paths[j] == "" && paths[i] != ""
		}
		if di != dj {
			return di > dj
		}
		return paths[i] < paths[j]
	})
	for _, p := range paths {
		m := x.dirs[p]
		fd, err := openat2(x.root, orDot(p), unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			continue // replaced by a non-directory later in the tar
		}
		err = unix.Fchmod(fd, x.diskMode(m.mode, true))
		if err == nil {
			err = futimens(fd, m.atime, m.mtime)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%q: dir metadata: %w", p, err)
		}
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func futimens(fd int, a, m time.Time) error {
	ts := [2]unix.Timespec{timespec(a), timespec(m)}
	return unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH)
}

func setTimesAt(dirfd int, base string, a, m time.Time) error {
	ts := [2]unix.Timespec{timespec(a), timespec(m)}
	if err := unix.UtimesNanoAt(dirfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%q: utimes: %w", base, err)
	}
	return nil
}
