// Package fs is strata's union filesystem on go-fuse: an ordered stack of
// read-only lower directories under an optional writable upper directory,
// served with the semantics of the kernel's overlayfs (see DESIGN.md).
//
// Identity. Every directory node holds, for each layer where it exists, a
// directory fd opened beneath that layer's root; every lookup and write is an
// *at call on one of those fds with a single-component name, so nothing a
// layer contains can steer the daemon outside its layers. Inode numbers come
// from the object's origin: the inode a file had in the layer it was first
// found in (recorded in an xattr on copy-up), so st_ino survives copy-up,
// forget and remount.
//
// Copy-up and passthrough. A go-fuse Inode whose data was ever opened from a
// lower layer keeps that backing for its lifetime, because the kernel shares
// one passthrough backing file per inode among all opens. When such a node is
// copied up it is marked stale: its generation is bumped, so the next lookup
// of the name yields a new Inode with the same st_ino, and opens of the stale
// one answer ESTALE, which makes the kernel look the name up again and retry.
package fs

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Config describes one union mount.
type Config struct {
	// Lowers are the read-only layers, top-most first (overlayfs order).
	Lowers []string
	// Upper and Work are the writable layer and its staging directory on
	// the same filesystem. Both empty means a read-only mount.
	Upper, Work string
	// Log receives debug traces and warnings; nil means a silent logger.
	// It is the process's own: a daemon handed a Config (JSON) sets its.
	Log *logrus.Logger `json:"-"`
	// Rootless selects the unprivileged on-disk forms (user.overlay.*
	// xattrs, .wh. whiteout files when mknod is refused).
	Rootless bool
	// Timeouts for the kernel's entry and attribute caches.
	EntryTimeout, AttrTimeout, NegativeTimeout time.Duration
	// NoPassthrough disables FUSE passthrough even where the kernel offers it.
	NoPassthrough bool
	// NoSync skips every sync to the upper: the fdatasync that makes a
	// copy-up durable before it becomes visible, and fsync(2)/fdatasync(2)
	// through the mount (fuse-overlayfs's fsync=0). After a machine crash
	// the upper may hold empty or partial copies.
	NoSync bool
	// Volatile is the kernel's volatile option: NoSync plus the marker
	// WORKDIR/work/incompat/volatile, which makes a later mount refuse the
	// upper unless this mount ended cleanly (then strata syncs the upper and
	// removes the marker; the kernel leaves that to the user).
	Volatile bool
	// OverrideStat presents (and records, for changes) owners, modes and
	// device types kept in the OverrideXattr, as an unprivileged daemon must.
	OverrideStat bool
	// Raw serves a single lower layer as it is on disk: whiteouts show as
	// the 0/0 devices they are, .wh. markers and overlay xattrs are visible,
	// nothing is hidden (for looking at one layer's own diff).
	Raw bool
	// viewOnly: opened by a View, which only reads (work/ is not cleaned,
	// so a View can look at the layers of a live mount).
	viewOnly bool
	// handedOver: the daemon of a mount that MountFd prepared and made,
	// volatile marker included.
	handedOver bool
	// LayerInfo describes each lower (same order as Lowers) for the
	// user.strata.layer xattr; empty means "lower N: PATH".
	LayerInfo []string
	// IDs maps owners between the layers and the mount (idmap.go).
	IDs IDMapping
}

// LayerXattr is readable on every entry of a mount and names the layer that
// provides it. It is never listed, so cp -a and tar do not copy it.
const LayerXattr = "user.strata.layer"

type layer struct {
	index int // 0 is the upper when writable; lowers follow top-down
	path  string
	root  int // directory fd of the layer root
	dev   uint64
	upper bool
}

// unionFS is the state shared by all nodes of one mount.
type unionFS struct {
	cfg    Config
	log    *logrus.Logger
	upper  *layer // nil when read-only
	lowers []*layer
	work   int // fd of the work dir, -1 when read-only
	// workOwnsNew: what the daemon creates in work/ is owned by euid:egid.
	workOwnsNew bool
	volatileSet bool // this mount created the volatile marker
	index       int  // fd of work/index, -1 when read-only

	xattrPrefix string // "trusted.overlay." or "user.overlay."
	originXattr string
	redirXattr  string
	opaqueXattr string
	indexXattr  string // on an indexed hard link: its key in work/index
	nlinkXattr  string // on an indexed hard link: the union's link count

	devMu  sync.Mutex
	devIdx map[uint64]uint64 // device -> high bits for inode numbers

	genMu sync.Mutex
	gens  map[uint64]uint64 // ino -> current generation (absent: 0)

	hlMu    sync.Mutex
	hlNodes map[uint64][]weak.Pointer[node] // per-name nodes of hard-linked lower files

	euid    uint32 // the daemon's own ids, for new files' owners
	egid    int
	tmpSeq  atomic.Uint64
	copyMu  sync.Mutex // serialises creation of upper directories
	noWhDev bool       // mknod of whiteout devices refused: use .wh. files
}

func newUnionFS(cfg Config) (*unionFS, error) {
	u := &unionFS{cfg: cfg, work: -1, index: -1, devIdx: map[uint64]uint64{}, gens: map[uint64]uint64{}, hlNodes: map[uint64][]weak.Pointer[node]{}}
	u.log = cfg.Log
	u.euid, u.egid = uint32(unix.Geteuid()), unix.Getegid()
	if u.log == nil {
		u.log = logrus.New()
		u.log.SetLevel(logrus.WarnLevel)
	}
	if len(cfg.Lowers) == 0 && cfg.Upper == "" {
		return nil, fmt.Errorf("no layers: need at least one lowerdir or an upperdir")
	}
	if cfg.Raw && (len(cfg.Lowers) != 1 || cfg.Upper != "") {
		return nil, fmt.Errorf("a raw mount takes exactly one lower layer and no upper")
	}
	if (cfg.Upper == "") != (cfg.Work == "") {
		return nil, fmt.Errorf("upperdir and workdir go together")
	}
	u.xattrPrefix = "trusted.overlay."
	if cfg.Rootless {
		u.xattrPrefix = "user.overlay."
	}
	u.originXattr = u.xattrPrefix + "strata.origin"
	u.redirXattr = u.xattrPrefix + "redirect"
	u.opaqueXattr = u.xattrPrefix + "opaque"
	u.indexXattr = u.xattrPrefix + "strata.index"
	u.nlinkXattr = u.xattrPrefix + "strata.nlink"

	open := func(idx int, path string, upper bool) (*layer, error) {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open layer %s: %w", path, err)
		}
		if !upper {
			fd = u.readOnlyView(fd, path)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("stat layer %s: %w", path, err)
		}
		return &layer{index: idx, path: path, root: fd, dev: st.Dev, upper: upper}, nil
	}
	idx := 0
	if cfg.Upper != "" {
		l, err := open(0, cfg.Upper, true)
		if err != nil {
			return nil, err
		}
		u.upper = l
		idx = 1
		if err := u.prepareWork(); err != nil {
			u.close()
			return nil, err
		}
	}
	for _, p := range cfg.Lowers {
		l, err := open(idx, p, false)
		if err != nil {
			u.close()
			return nil, err
		}
		u.lowers = append(u.lowers, l)
		idx++
	}
	u.markUpper() // rootless.go
	// The upper's device (or the top lower's) keeps raw inode numbers;
	// other devices get their index in the top bits, as the kernel's xino.
	first := u.layers()[0]
	u.devIdx[first.dev] = 0
	return u, nil
}

// readOnlyView replaces a lower layer's root fd by the root of a private,
// detached, read-only bind mount of it (open_tree + mount_setattr), a second
// line of defence: whatever the daemon does through it, including a
// passthrough backing file the kernel writes to, fails with EROFS instead of
// changing the layer. Where that needs privileges we lack, fd is kept.
func (u *unionFS) readOnlyView(fd int, path string) int {
	tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		u.log.Debugf("layer %s: no read-only view (open_tree: %v)", path, err)
		return fd
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		u.log.Debugf("layer %s: no read-only view (mount_setattr: %v)", path, err)
		unix.Close(tree)
		return fd
	}
	// A directory fd (not O_PATH) on the view, so xattr calls work on it.
	rfd, err := openDirAt(tree, ".")
	unix.Close(tree)
	if err != nil {
		u.log.Debugf("layer %s: no read-only view (open: %v)", path, err)
		return fd
	}
	unix.Close(fd)
	return rfd
}

// layers returns all layers top-down, upper first.
func (u *unionFS) layers() []*layer {
	ls := make([]*layer, 0, len(u.lowers)+1)
	if u.upper != nil {
		ls = append(ls, u.upper)
	}
	return append(ls, u.lowers...)
}

// prepareWork cleans leftovers of an interrupted operation in work/ and
// creates the index directory.
func (u *unionFS) prepareWork() error {
	wfd, err := unix.Open(u.cfg.Work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open workdir %s: %w", u.cfg.Work, err)
	}
	var wst unix.Stat_t
	if err := unix.Fstat(wfd, &wst); err != nil {
		unix.Close(wfd)
		return fmt.Errorf("stat workdir: %w", err)
	}
	if wst.Dev != u.upper.dev {
		unix.Close(wfd)
		return fmt.Errorf("workdir %s and upperdir %s are on different filesystems", u.cfg.Work, u.cfg.Upper)
	}
	u.work = wfd
	// A file created in work/ gets the daemon's ids unless the directory
	// is setgid, in which case it takes the directory's group.
	u.workOwnsNew = wst.Mode&unix.S_ISGID == 0 || wst.Gid == uint32(u.egid)
	if u.cfg.viewOnly {
		// A View of a live mount reads the index and leaves work/ be.
		if ifd, err := openDirAt(wfd, "index"); err == nil {
			u.index = ifd
		}
		return nil
	}
	if err := u.checkVolatile(wfd); err != nil {
		return err
	}
	// Staging entries are ours; anything left is from a crash.
	names, err := readNames(wfd)
	if err != nil {
		return fmt.Errorf("read workdir: %w", err)
	}
	for _, n := range names {
		if len(n) > 8 && n[:8] == "#strata-" {
			if err := removeAllAt(wfd, n); err != nil {
				u.log.Warnf("clean workdir entry %s: %v", n, err)
			}
		}
	}
	if err := unix.Mkdirat(wfd, "index", 0o700); err != nil && err != unix.EEXIST {
		return fmt.Errorf("create %s/index: %w", u.cfg.Work, err)
	}
	ifd, err := openDirAt(wfd, "index")
	if err != nil {
		return fmt.Errorf("open %s/index: %w", u.cfg.Work, err)
	}
	u.index = ifd
	return nil
}

// volatileMarker is where the kernel's overlayfs (and strata) record that a
// volatile mount may have left the upper incomplete.
const volatileMarker = "work/incompat/volatile"

// checkVolatile refuses an upper that a volatile mount did not release, and
// marks the upper when this mount is volatile.
func (u *unionFS) checkVolatile(wfd int) error {
	var st unix.Stat_t
	if err := unix.Fstatat(wfd, volatileMarker, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && !(u.cfg.handedOver && u.cfg.Volatile) {
		return fmt.Errorf("workdir %s: %s exists: a volatile mount of this upper did not end cleanly, so the upper may be missing data; "+
			"start from a new upperdir and workdir, or remove %s/%s if the machine did not crash", u.cfg.Work, volatileMarker, u.cfg.Work, volatileMarker)
	}
	if !u.cfg.Volatile {
		return nil
	}
	u.cfg.NoSync = true
	dir := wfd
	for _, name := range strings.Split(volatileMarker, "/") {
		if err := unix.Mkdirat(dir, name, 0o700); err != nil && err != unix.EEXIST {
			return fmt.Errorf("workdir %s: create %s: %w", u.cfg.Work, volatileMarker, err)
		}
		next, err := openDirAt(dir, name)
		if dir != wfd {
			unix.Close(dir)
		}
		if err != nil {
			return fmt.Errorf("workdir %s: open %s: %w", u.cfg.Work, volatileMarker, err)
		}
		dir = next
	}
	unix.Close(dir)
	u.volatileSet = true
	return nil
}

// releaseVolatile ends a volatile mount cleanly: once the upper is on disk
// the marker goes, so the next mount accepts the upper.
func (u *unionFS) releaseVolatile() {
	if !u.volatileSet || u.upper == nil {
		return
	}
	if err := unix.Syncfs(u.upper.root); err != nil {
		u.log.Warnf("volatile mount: syncfs of the upper failed (%v); leaving %s/%s in place", err, u.cfg.Work, volatileMarker)
		return
	}
	for _, p := range []string{volatileMarker, "work/incompat", "work"} {
		if err := unix.Unlinkat(u.work, p, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
			if p == volatileMarker {
				u.log.Warnf("volatile mount: remove %s/%s: %v", u.cfg.Work, p, err)
			}
			return
		}
	}
	u.volatileSet = false
}

func (u *unionFS) close() {
	u.releaseVolatile()
	for _, l := range u.layers() {
		unix.Close(l.root)
	}
	if u.work >= 0 {
		unix.Close(u.work)
	}
	if u.index >= 0 {
		unix.Close(u.index)
	}
}

// ino maps a layer object's (dev, ino) to the mount's inode number.
func (u *unionFS) ino(dev, ino uint64) uint64 {
	u.devMu.Lock()
	hi, ok := u.devIdx[dev]
	if !ok {
		hi = uint64(len(u.devIdx))
		u.devIdx[dev] = hi
	}
	u.devMu.Unlock()
	if hi == 0 {
		return ino
	}
	return ino ^ (hi << 56)
}

func (u *unionFS) gen(ino uint64) uint64 {
	u.genMu.Lock()
	defer u.genMu.Unlock()
	return u.gens[ino]
}

func (u *unionFS) bumpGen(ino uint64) {
	u.genMu.Lock()
	u.gens[ino]++
	u.genMu.Unlock()
}

// addHardLinkNode registers a per-name node of a hard-linked file.
func (u *unionFS) addHardLinkNode(ino uint64, n *node) {
	u.hlMu.Lock()
	defer u.hlMu.Unlock()
	live := u.hlNodes[ino][:0]
	for _, w := range u.hlNodes[ino] {
		if m := w.Value(); m != nil && m != n {
			live = append(live, w)
		}
	}
	u.hlNodes[ino] = append(live, weak.Make(n))
}

// hardLinkNodes returns the live per-name nodes of ino other than n.
func (u *unionFS) hardLinkNodes(ino uint64, n *node) []*node {
	u.hlMu.Lock()
	defer u.hlMu.Unlock()
	var out []*node
	live := u.hlNodes[ino][:0]
	for _, w := range u.hlNodes[ino] {
		if m := w.Value(); m != nil {
			live = append(live, w)
			if m != n {
				out = append(out, m)
			}
		}
	}
	if len(live) == 0 {
		delete(u.hlNodes, ino)
	} else {
		u.hlNodes[ino] = live
	}
	return out
}

func (u *unionFS) tmpName(kind string) string {
	return tmpName(kind, uint64(os.Getpid())<<32|u.tmpSeq.Add(1))
}
