package layerstore

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// How much of an image is dead weight: bytes that a layer adds and a later
// layer overwrites or deletes. Two views:
//
//   - per layer, exactly: each file's bytes count as wasted when the file
//     is not in the final image (replaced, whited out, hidden by an opaque
//     directory or by a non-directory put over one of its parents, unless
//     one of its hard links survives);
//   - the image's score, as dive (github.com/wagoodman/dive) computes it,
//     so that a pipeline gating on dive's number gets the same number: for
//     every path that is a leaf in some layer (a file, a link, an empty
//     directory, a whiteout), the smallest size it ever had divided by the
//     sum of its sizes over the layers; a whiteout weighs 0 for a file and
//     the whole tree below for a directory; opaque markers count for
//     nothing (dive ignores them). dive's "wasted bytes" is the summed size
//     of the paths seen in more than one layer.
//
// Both read each layer's contents.jsonl (its tar entries in order); a layer
// without one is walked.

// LayerEfficiency is one layer's share.
type LayerEfficiency struct {
	Index     int    `json:"index"` // 1 is the bottom layer
	DiffID    string `json:"diff_id"`
	CreatedBy string `json:"created_by,omitempty"`
	Size      int64  `json:"size"`   // bytes of the layer tar
	Files     int    `json:"files"`  // regular files it adds
	Added     int64  `json:"added"`  // their bytes
	Wasted    int64  `json:"wasted"` // of those, bytes not in the final image
}

// PathWaste is a path that more than one layer holds (dive's inefficiencies).
type PathWaste struct {
	Path           string `json:"path"`
	Layers         int    `json:"layers"`
	CumulativeSize int64  `json:"cumulative_size"`
}

// Efficiency is the analysis of one image.
type Efficiency struct {
	Layers []LayerEfficiency `json:"layers"` // bottom first
	Added  int64             `json:"added"`
	Wasted int64             `json:"wasted"`
	// Score is dive's efficiency score (1 = nothing wasted).
	Score float64 `json:"score"`
	// DiveWastedBytes and DiveWastedUserPercent are dive's "wasted bytes"
	// (summed size of paths several layers hold) and that over the bytes of
	// every layer but the first.
	DiveWastedBytes       int64       `json:"dive_wasted_bytes"`
	DiveWastedUserPercent float64     `json:"dive_wasted_user_percent"`
	Inefficient           []PathWaste `json:"inefficient"` // largest first
}

// effEntry is a layer's entry as efficiency needs it.
type effEntry struct {
	path string // clean, relative; "" is the root
	typ  string // contentEntry types
	size int64
	link string // hard link target
}

// layerEntries reads a stored layer's entries, a later entry for a path
// replacing an earlier one (as extraction does), in tar order.
func (s *Store) layerEntries(diffID string) ([]effEntry, error) {
	f, err := os.Open(filepath.Join(s.layerPath(diffID), "contents.jsonl"))
	if errors.Is(err, fs.ErrNotExist) {
		return walkLayerEntries(s.LayerDir(diffID))
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []effEntry
	at := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ce contentEntry
		if err := json.Unmarshal(sc.Bytes(), &ce); err != nil {
			return nil, fmt.Errorf("layer %s: contents.jsonl: %w", diffID, err)
		}
		if ce.Path == "" {
			continue
		}
		e := effEntry{path: ce.Path, typ: ce.Type, size: ce.Size, link: ce.Link}
		key := e.path
		if e.typ == "o" {
			key += "\x00opaque" // the marker of a directory, not a new entry for it
		}
		if i, ok := at[key]; ok {
			out[i].typ = "" // replaced
		}
		at[key] = len(out)
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	kept := out[:0]
	for _, e := range out {
		if e.typ != "" {
			kept = append(kept, e)
		}
	}
	return kept, nil
}

// walkLayerEntries lists an extracted layer directory (kernel overlay form).
func walkLayerEntries(root string) ([]effEntry, error) {
	var out []effEntry
	first := map[[2]uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := effEntry{path: rel}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.typ = "d"
			out = append(out, e)
			var b [1]byte
			for _, a := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
				if n, err := unix.Lgetxattr(p, a, b[:]); err == nil && n == 1 && b[0] == 'y' {
					out = append(out, effEntry{path: rel, typ: "o"})
					break
				}
			}
			return nil
		case unix.S_IFREG:
			e.typ, e.size = "f", st.Size
			if st.Nlink > 1 {
				k := [2]uint64{st.Dev, st.Ino}
				if t, ok := first[k]; ok {
					e = effEntry{path: rel, typ: "h", link: t}
				} else {
					first[k] = rel
				}
			}
		case unix.S_IFCHR:
			e.typ = "c"
			if st.Rdev == 0 {
				e.typ = "w"
			}
		default:
			e.typ = "l"
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// Efficiency analyses img.
func (s *Store) Efficiency(img *Image) (*Efficiency, error) {
	res := &Efficiency{Layers: []LayerEfficiency{}, Inefficient: []PathWaste{}}
	final := newEffNode(true)
	dive := newEffNode(true)
	type stat struct {
		cum, min int64
		n        int
	}
	paths := map[string]*stat{}
	var layers [][]effEntry
	for i, l := range img.Layers {
		ents, err := s.layerEntries(l.DiffID)
		if err != nil {
			return nil, fmt.Errorf("efficiency: %w", err)
		}
		layers = append(layers, ents)
		le := LayerEfficiency{Index: i + 1, DiffID: l.DiffID, CreatedBy: l.CreatedBy, Size: l.Size}
		for _, e := range ents {
			if e.typ == "f" {
				le.Files++
				le.Added += e.size
			}
		}
		res.Layers = append(res.Layers, le)

		// dive: the leaves of this layer's own tree, against the layers below.
		tree := newEffNode(true)
		for _, e := range ents {
			if e.typ == "o" {
				continue
			}
			name := e.path
			if e.typ == "w" {
				dir, base := path.Split(e.path)
				name = dir + ".wh." + base
			}
			n := tree.add(name)
			n.size, n.dir, n.whiteout = e.size, e.typ == "d", e.typ == "w"
		}
		tree.leaves("", func(p string, n *effNode) {
			size := n.size
			if n.whiteout {
				size = 0
				if prev := dive.get(p); prev != nil && prev.isDir() {
					size = prev.total()
				}
			}
			st := paths[p]
			if st == nil {
				st = &stat{min: -1}
				paths[p] = st
			}
			st.cum += size
			if st.min < 0 || size < st.min {
				st.min = size
			}
			st.n++
		})
		for _, e := range ents { // stack it, dive's way: whiteouts remove, the rest adds
			switch e.typ {
			case "o":
			case "w":
				dive.remove(e.path)
			default:
				n := dive.add(e.path)
				n.size, n.dir = e.size, e.typ == "d"
			}
		}

		// Exact: apply with the union's rules, remembering each file's origin.
		for _, e := range ents {
			if e.typ == "o" {
				if n := final.get(e.path); n != nil && n.dir {
					n.children = map[string]*effNode{}
				}
			}
		}
		for _, e := range ents {
			if e.typ == "w" {
				final.remove(e.path)
			}
		}
		for _, e := range ents {
			switch e.typ {
			case "o", "w":
				continue
			case "d":
				if n := final.get(e.path); n != nil && n.dir {
					continue // directories merge
				}
			}
			n := final.replace(e.path)
			n.dir, n.layer, n.size = e.typ == "d", i, e.size
			if e.typ == "f" {
				n.origin = e.path
			} else if e.typ == "h" {
				n.origin = e.link
			}
		}
	}
	type fileID struct {
		layer int
		path  string
	}
	alive := map[fileID]bool{}
	final.walk(func(n *effNode) {
		if n.origin != "" {
			alive[fileID{n.layer, n.origin}] = true
		}
	})
	for i, ents := range layers {
		for _, e := range ents {
			if e.typ == "f" && !alive[fileID{i, e.path}] {
				res.Layers[i].Wasted += e.size
			}
		}
		res.Added += res.Layers[i].Added
		res.Wasted += res.Layers[i].Wasted
	}
	var minSum, cumSum, user int64
	for p, st := range paths {
		minSum += st.min
		cumSum += st.cum
		if st.n > 1 {
			res.DiveWastedBytes += st.cum
			res.Inefficient = append(res.Inefficient, PathWaste{Path: "/" + p, Layers: st.n, CumulativeSize: st.cum})
		}
	}
	res.Score = 1
	if cumSum > 0 {
		res.Score = float64(minSum) / float64(cumSum)
	}
	for i, l := range res.Layers {
		if i > 0 {
			user += l.Added
		}
	}
	if user > 0 {
		res.DiveWastedUserPercent = float64(res.DiveWastedBytes) / float64(user)
	}
	sort.Slice(res.Inefficient, func(i, j int) bool {
		a, b := res.Inefficient[i], res.Inefficient[j]
		if a.CumulativeSize != b.CumulativeSize {
			return a.CumulativeSize > b.CumulativeSize
		}
		return a.Path < b.Path
	})
	return res, nil
}

// effNode is a node of a path tree.
type effNode struct {
	children map[string]*effNode
	dir      bool
	whiteout bool
	size     int64
	layer    int
	origin   string // exact view: the path of the file this name's content came in as
}

func newEffNode(dir bool) *effNode { return &effNode{children: map[string]*effNode{}, dir: dir} }

func (n *effNode) isDir() bool { return n.dir || len(n.children) > 0 }

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func (n *effNode) get(p string) *effNode {
	for _, c := range splitPath(p) {
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

// add finds or creates p (parents made as needed), keeping its children.
func (n *effNode) add(p string) *effNode {
	for _, c := range splitPath(p) {
		ch := n.children[c]
		if ch == nil {
			ch = newEffNode(false)
			n.children[c] = ch
		}
		n = ch
	}
	return n
}

// replace puts a fresh node at p; a non-directory parent becomes a directory
// (what it was is gone, as when a layer puts a directory over a file).
func (n *effNode) replace(p string) *effNode {
	parts := splitPath(p)
	for i, c := range parts {
		ch := n.children[c]
		last := i == len(parts)-1
		if ch == nil || last || !ch.dir {
			ch = newEffNode(!last)
			n.children[c] = ch
		}
		n = ch
	}
	return n
}

func (n *effNode) remove(p string) {
	parts := splitPath(p)
	if len(parts) == 0 {
		return
	}
	if parent := n.get(strings.Join(parts[:len(parts)-1], "/")); parent != nil {
		delete(parent.children, parts[len(parts)-1])
	}
}

// total is the summed size of n and everything below it.
func (n *effNode) total() int64 {
	t := n.size
	for _, c := range n.children {
		t += c.total()
	}
	return t
}

// leaves visits the nodes without children, with their paths (a whiteout's
// path without its .wh. prefix, as dive reports it).
func (n *effNode) leaves(p string, visit func(string, *effNode)) {
	for name, c := range n.children {
		cp := name
		if p != "" {
			cp = p + "/" + name
		}
		if len(c.children) == 0 {
			if c.whiteout {
				cp = path.Join(p, strings.TrimPrefix(name, ".wh."))
			}
			visit(cp, c)
			continue
		}
		c.leaves(cp, visit)
	}
}

func (n *effNode) walk(visit func(*effNode)) {
	visit(n)
	for _, c := range n.children {
		c.walk(visit)
	}
}
