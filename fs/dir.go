package fs

import (
	"context"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func (d *node) invalidateListing() {
	d.mu.Lock()
	d.listing, d.listedIn = nil, nil
	d.listGen++
	d.mu.Unlock()
}

// mergedListing lists each visible name once, the topmost instance winning;
// whiteouts, whiteout markers and what they hide are left out. The entries
// carry their directory offsets and are sorted by them (see dirHandle); the
// slice is shared and must not be changed.
func (d *node) mergedListing() ([]fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	if d.listing != nil {
		l := d.listing
		d.mu.Unlock()
		return l, 0
	}
	dirs, gen := d.dirs, d.listGen
	d.mu.Unlock()

	raw := d.u.cfg.Raw
	seen := map[string]bool{}
	in := map[string]*layer{}
	var out []fuse.DirEntry
	for _, dl := range dirs {
		ents, err := readDirents(dl.fd)
		if err == unix.ENOENT && !dl.l.upper {
			// The directory was removed from its lower layer under
			// the live mount (which overlayfs leaves undefined): it
			// holds nothing now, and the other layers still list.
			d.u.log.Warnf("%s: a directory of this layer was removed under the mount; listing the other layers", d.u.describeLayer(dl.l))
			continue
		}
		if err != nil {
			return nil, toErrno(err)
		}
		var hidden []string
		opaqueMarker := false
		for _, e := range ents {
			if strings.HasPrefix(e.name, ".wh.") && !raw {
				if e.name == ".wh..wh..opq" {
					opaqueMarker = true
				} else if !strings.HasPrefix(e.name, ".wh..wh.") {
					hidden = append(hidden, e.name[4:])
				}
				continue
			}
			if seen[e.name] {
				continue
			}
			mode := dtToMode(e.typ)
			if e.typ == unix.DT_CHR || e.typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if err := lstatAt(dl.fd, e.name, &st); err != nil {
					continue
				}
				if isWhiteout(&st) && !raw {
					seen[e.name] = true
					continue
				}
				mode = st.Mode & unix.S_IFMT
			}
			seen[e.name] = true
			ino := d.u.ino(dl.l.dev, e.ino)
			if dl.l.upper {
				nm := e.name
				if v, err := getxattrAll(dl.fd, nm, d.u.originXattr); err == nil {
					if o, err := strconv.ParseUint(string(v), 10, 64); err == nil && o != 0 {
						ino = o
					}
				}
			}
			out = append(out, fuse.DirEntry{Name: e.name, Mode: mode, Ino: ino, Off: nameOffset(e.name)})
			in[e.name] = dl.l
		}
		for _, h := range hidden {
			seen[h] = true
		}
		if opaqueMarker {
			break
		}
	}
	if out == nil {
		out = []fuse.DirEntry{}
	}
	sortByOffset(out)
	d.mu.Lock()
	// Keep it only if nothing changed the directory meanwhile.
	if gen == d.listGen && sameDirs(d.dirs, dirs) {
		d.listing, d.listedIn = out, in
	}
	d.mu.Unlock()
	return out, 0
}

func sameDirs(a, b []dirLayer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return unix.S_IFREG
}

// dirHandle is an open merged directory: a snapshot of the listing taken at
// opendir (rewinddir takes a new one).
//
// An entry's offset is a hash of its name, and the snapshot is sorted by it
// (as ext4 does), not its index in the snapshot: with FOPEN_CACHE_DIR the
// kernel resumes a reader's listing at its last offset in whatever listing
// it cached last, which another opener may have taken from a changed
// directory. Index offsets then point at other names, and names that never
// changed came back twice or not at all; hash offsets resume right after the
// last name returned in any snapshot.
type dirHandle struct {
	d       *node
	dots    [2]fuse.DirEntry // "." and "..", at offsets 1 and 2
	entries []fuse.DirEntry  // the node's cached listing: shared, read only
	pos     int              // in dots, then entries
}

var (
	_ = (gofs.NodeOpendirHandler)((*node)(nil))
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
)

func (d *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h := &dirHandle{d: d}
	if errno := h.load(); errno != 0 {
		return nil, 0, errno
	}
	// The kernel may keep the listing: every change to a directory goes
	// through it, and it drops its cache when the directory changes.
	return h, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func (h *dirHandle) load() syscall.Errno {
	list, errno := h.d.mergedListing()
	if errno != 0 {
		return errno
	}
	self := h.d.StableAttr().Ino
	parent := self
	if _, p := h.d.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	h.dots = [2]fuse.DirEntry{
		{Name: ".", Mode: unix.S_IFDIR, Ino: self, Off: 1},
		{Name: "..", Mode: unix.S_IFDIR, Ino: parent, Off: 2},
	}
	h.entries = list
	h.pos = 0
	return 0
}

func sortByOffset(ents []fuse.DirEntry) {
	sort.Slice(ents, func(i, j int) bool {
		if ents[i].Off != ents[j].Off {
			return ents[i].Off < ents[j].Off
		}
		return ents[i].Name < ents[j].Name
	})
	// Two names of one hash (one in 2^62 pairs): the later one takes the
	// next free offset, so that offsets stay increasing.
	for i := 1; i < len(ents); i++ {
		if ents[i].Off <= ents[i-1].Off {
			ents[i].Off = ents[i-1].Off + 1
		}
	}
}

// nameOffset is a name's directory offset: 62 bits of its FNV-1a hash,
// above the offsets of "." (1) and ".." (2), below 2^63 (loff_t is signed).
func nameOffset(name string) uint64 {
	f := fnv.New64a()
	f.Write([]byte(name))
	return f.Sum64()>>2 + 3
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	var e *fuse.DirEntry
	switch {
	case h.pos < len(h.dots):
		e = &h.dots[h.pos]
	case h.pos-len(h.dots) < len(h.entries):
		e = &h.entries[h.pos-len(h.dots)]
	default:
		return nil, 0
	}
	h.pos++
	return e, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		return h.load()
	}
	if off < h.dots[1].Off {
		h.pos = int(off) // just after "."
		return 0
	}
	// Continue after the entry with offset off, or where it would be.
	h.pos = len(h.dots) + sort.Search(len(h.entries), func(i int) bool { return h.entries[i].Off > off })
	return 0
}

func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	fd := h.d.upperFd()
	if fd < 0 || h.d.u.cfg.NoSync {
		return 0
	}
	return toErrno(unix.Fsync(fd))
}

// Lookup answers READDIRPLUS for the name Readdirent just produced.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if ch := h.d.GetChild(name); ch != nil {
		if n, ok := ch.Operations().(*node); ok {
			var st unix.Stat_t
			if n.statNode(&st) == 0 {
				n.mu.Lock()
				stale, hl := n.stale, n.hardLinked
				n.mu.Unlock()
				if !stale {
					h.d.u.fillAttr(&out.Attr, &st, ch)
					if hl {
						// As in Lookup: a write through another
						// name (passthrough: unseen here)
						// changes this name's size and times.
						out.SetAttrTimeout(uncachedAttrTimeout)
					}
					return ch, 0
				}
			}
		}
	}
	return h.d.Lookup(ctx, name, out)
}
