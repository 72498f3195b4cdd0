package fs

import (
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// View answers questions about a layer stack without mounting it: which
// layer provides a path, what each layer holds under a name, and a merged
// listing with or without what is hidden. It resolves exactly as the mount
// does (the same lookup and listing code).
type View struct {
	u    *unionFS
	root *node
}

// NewView opens the layers of cfg (Upper and Work may be those of a live
// mount: a View only reads).
func NewView(cfg Config) (*View, error) {
	cfg.viewOnly = true
	u, err := newUnionFS(cfg)
	if err != nil {
		return nil, err
	}
	root := u.newNode()
	var dirs []dirLayer
	for _, l := range u.layers() {
		fd, err := openDirAt(l.root, ".")
		if err != nil {
			u.close()
			return nil, err
		}
		dirs = append(dirs, dirLayer{l: l, fd: fd})
		if !l.upper && u.isOpaque(fd) {
			break
		}
	}
	root.setDirs(dirs)
	return &View{u: u, root: root}, nil
}

// Close releases the layers' fds.
func (v *View) Close() {
	v.root.fds.closeAll()
	v.u.close()
}

// Hit is what one layer holds under a path.
type Hit struct {
	Layer int    // 0 is the upper when there is one; lowers follow top-down
	Desc  string // user.strata.layer form
	// Kind: "provides" (the visible entry), "merged" (a directory
	// instance merged into the visible one), "shadowed" (hidden by a
	// layer above), "whiteout" (this layer deletes the name),
	// "opaque" (the directory here hides everything below it).
	Kind string
	Mode uint32 // S_IFMT and permission bits; 0 for whiteouts
	Size int64
}

// Which reports every layer that has something under p (a path relative to
// the union's root), top-down.
func (v *View) Which(p string) ([]Hit, error) {
	parent, name, err := v.parentOf(p)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return v.dirHits(v.root), nil
	}
	if parent != v.root {
		defer parent.closeTemp()
	}
	const (
		searching = iota
		merging   // a directory is visible; directories below merge in
		stopped   // everything below is hidden
	)
	state := searching
	var hits []Hit
	for _, dl := range parent.dirs {
		h := Hit{Layer: dl.l.index, Desc: v.u.describeLayer(dl.l)}
		var st unix.Stat_t
		err := lstatAt(dl.fd, name, &st)
		if err == unix.ENOENT && whitedOut(dl.fd, name) {
			st, err = unix.Stat_t{Mode: unix.S_IFCHR}, nil
		}
		if err == unix.ENOENT {
			continue
		}
		if err != nil {
			return nil, err
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		switch {
		case isWhiteout(&st):
			h.Kind = "whiteout"
			if state == stopped {
				h.Kind = "shadowed"
			}
			state = stopped
		case state == stopped || (state == merging && !isDir):
			h.Kind, h.Mode, h.Size = "shadowed", st.Mode, st.Size
			state = stopped
		default:
			h.Kind, h.Mode, h.Size = "provides", st.Mode, st.Size
			if state == merging {
				h.Kind = "merged"
			}
			state = stopped
			if isDir {
				state = merging
				if fd, err := openDirAt(dl.fd, name); err == nil {
					if v.u.isOpaque(fd) {
						h.Kind += ",opaque"
						state = stopped
					}
					unix.Close(fd)
				}
			}
		}
		hits = append(hits, h)
	}
	if len(hits) == 0 {
		return nil, syscall.ENOENT
	}
	return hits, nil
}

func (v *View) dirHits(d *node) []Hit {
	var hits []Hit
	for i, dl := range d.dirs {
		kind := "merged"
		if i == 0 {
			kind = "provides"
		}
		var st unix.Stat_t
		unix.Fstat(dl.fd, &st)
		hits = append(hits, Hit{Layer: dl.l.index, Desc: v.u.describeLayer(dl.l), Kind: kind, Mode: st.Mode})
	}
	return hits
}

// Entry is one name of a listing.
type Entry struct {
	Name   string
	Mode   uint32
	Size   int64
	Uid    uint32
	Gid    uint32
	Nlink  uint64
	Mtime  time.Time
	Target string // symlink target
	Rdev   uint64
	Layer  int
	Desc   string
	// Hidden marks, with all, an entry that a higher layer shadows or
	// whites out; Whiteout one that is itself a whiteout.
	Hidden   bool
	Whiteout bool
}

// List lists directory p merged; with all, also every instance that is
// shadowed or whited out and the whiteouts themselves, marked.
func (v *View) List(p string, all bool) ([]Entry, error) {
	d, err := v.dirAt(p)
	if err != nil {
		return nil, err
	}
	if d != v.root {
		defer d.closeTemp()
	}
	var out []Entry
	visible := map[string]bool{}
	list, errno := d.mergedListing()
	if errno != 0 {
		return nil, errno
	}
	for _, me := range list {
		visible[me.Name] = true
	}
	seenLayer := map[string]bool{}
	for _, dl := range d.dirs {
		ents, err := readDirents(dl.fd)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			var st unix.Stat_t
			if lstatAt(dl.fd, e.name, &st) != nil {
				continue
			}
			wh := isWhiteout(&st) || strings.HasPrefix(e.name, ".wh.")
			en := Entry{Name: e.name, Mode: st.Mode, Size: st.Size, Uid: st.Uid, Gid: st.Gid, Nlink: st.Nlink,
				Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec), Rdev: st.Rdev, Layer: dl.l.index, Desc: v.u.describeLayer(dl.l), Whiteout: wh}
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				buf := make([]byte, unix.PathMax)
				if n, err := unix.Readlinkat(dl.fd, e.name, buf); err == nil {
					en.Target = string(buf[:n])
				}
			}
			shown := !wh && visible[e.name] && !seenLayer[e.name]
			if !wh {
				seenLayer[e.name] = seenLayer[e.name] || visible[e.name]
			}
			if shown {
				out = append(out, en)
				continue
			}
			if all {
				en.Hidden = !wh
				out = append(out, en)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// parentOf resolves the directory holding p and returns it with p's last
// component ("" for the root).
func (v *View) parentOf(p string) (*node, string, error) {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return v.root, "", nil
	}
	dir, name := path.Split(p)
	d, err := v.dirAt(dir)
	if err != nil {
		return nil, "", err
	}
	return d, name, nil
}

// dirAt resolves directory p through the union. Intermediate nodes are
// temporary: the caller closes the result with closeTemp unless it is the
// root.
func (v *View) dirAt(p string) (*node, error) {
	p = strings.Trim(path.Clean("/"+p), "/")
	cur := v.root
	if p == "" {
		return cur, nil
	}
	for _, comp := range strings.Split(p, "/") {
		r, errno := cur.resolve(comp)
		if errno != 0 {
			if cur != v.root {
				cur.closeTemp()
			}
			return nil, errno
		}
		if len(r.dirs) == 0 {
			if cur != v.root {
				cur.closeTemp()
			}
			return nil, syscall.ENOTDIR
		}
		n := v.u.newNode()
		n.lowerPath = r.lowerPath
		n.setDirs(r.dirs)
		if cur != v.root {
			cur.closeTemp()
		}
		cur = n
	}
	return cur, nil
}

func (n *node) closeTemp() {
	if n.fds != nil {
		n.fds.closeAll()
	}
}
