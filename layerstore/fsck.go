package layerstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Fsck checks the store's consistency: tags point at images, images have
// their config (hashing to their ID) and every layer they list, each layer
// is complete (layer.json, diff/, contents.jsonl) and no staging directory
// is left by a dead import. With Deep, each layer's extracted tree is
// compared with the content manifest (contents.jsonl) written when it was
// imported: every path, type, size and content hash, and as root every
// mode, owner, link target and device number.

// FsckOptions tune Fsck.
type FsckOptions struct {
	Deep bool
}

// FsckProblem is one inconsistency.
type FsckProblem struct {
	Object string // "tag docker.io/library/x:1", "image <id>", "layer sha256:<hex>", "tmp/<name>", "repositories.json"
	Msg    string
}

func (p FsckProblem) String() string { return p.Object + ": " + p.Msg }

// FsckResult is what Fsck checked and found.
type FsckResult struct {
	Tags, Images, Layers int
	Files                int // regular files re-hashed (Deep)
	Problems             []FsckProblem
}

// Fsck checks the store; err is set only when the check itself could not run.
func (s *Store) Fsck(opts FsckOptions) (*FsckResult, error) {
	res := &FsckResult{}
	bad := func(obj, format string, args ...any) {
		res.Problems = append(res.Problems, FsckProblem{Object: obj, Msg: fmt.Sprintf(format, args...)})
	}
	ids, err := s.imageIDs()
	if err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	have := map[string]bool{}
	for _, id := range ids {
		have[id] = true
	}
	if repos, err := s.loadRepos(); err != nil {
		bad("repositories.json", "%v", err)
	} else {
		var refs []string
		for _, m := range repos.Repositories {
			for ref := range m {
				refs = append(refs, ref)
			}
		}
		sort.Strings(refs)
		for _, ref := range refs {
			res.Tags++
			id := strings.TrimPrefix(repos.Repositories[refRepo(ref)][ref], "sha256:")
			if _, ok := repos.Repositories[refRepo(ref)][ref]; !ok {
				bad("tag "+ref, "stored under repository %q, not its own", refRepoOf(repos, ref))
				continue
			}
			if !have[id] {
				bad("tag "+ref, "points at image %s, which does not exist", ShortID(id))
			}
		}
	}

	usedLayers := map[string]bool{}
	for _, id := range ids {
		res.Images++
		obj := "image " + id
		meta, err := s.readImageMeta(id)
		if err != nil {
			bad(obj, "%s", strings.TrimPrefix(err.Error(), obj+": "))
			continue
		}
		cfg, err := os.ReadFile(filepath.Join(s.imagePath(id), "config.json"))
		if err != nil {
			bad(obj, "config: %v", err)
			continue
		}
		if got := sha256Hex(cfg); got != id {
			bad(obj, "config.json hashes to sha256:%s, not the image ID", got)
		}
		c, err := v1.ParseConfigFile(bytes.NewReader(cfg))
		if err != nil {
			bad(obj, "config.json does not parse: %v", err)
			continue
		}
		if len(c.RootFS.DiffIDs) != len(meta.Layers) {
			bad(obj, "image.json lists %d layers, the config %d diff_ids", len(meta.Layers), len(c.RootFS.DiffIDs))
		}
		for i, l := range meta.Layers {
			usedLayers[strings.TrimPrefix(l.DiffID, "sha256:")] = true
			if i < len(c.RootFS.DiffIDs) && c.RootFS.DiffIDs[i].String() != l.DiffID {
				bad(obj, "layer %d is %s, the config says %s", i, l.DiffID, c.RootFS.DiffIDs[i])
			}
			if _, err := os.Stat(s.layerPath(l.DiffID)); err != nil {
				bad(obj, "layer %s is missing", l.DiffID)
			}
		}
	}

	ents, err := os.ReadDir(filepath.Join(s.root, "layers", "sha256"))
	if err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	for _, e := range ents {
		res.Layers++
		s.fsckLayer(e.Name(), opts, res, bad)
	}
	s.fsckTmp(bad)
	return res, nil
}

func refRepoOf(r *repositories, ref string) string {
	for repo, m := range r.Repositories {
		if _, ok := m[ref]; ok {
			return repo
		}
	}
	return ""
}

// fsckTmp reports staging directories and lock files that no live
// command holds: Open removes them, so one still here could not be removed.
func (s *Store) fsckTmp(bad func(string, string, ...any)) {
	tmp := filepath.Join(s.root, "tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		bad("tmp", "%v", err)
		return
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	for _, e := range ents {
		n := e.Name()
		lock := n + ".lock"
		if base, ok := strings.CutSuffix(n, ".lock"); ok {
			if names[base] {
				continue // judged with its directory
			}
			lock = n
		}
		if names[lock] && lockHeld(filepath.Join(tmp, lock)) {
			continue // a running import, gc or rmi
		}
		bad("tmp/"+n, "staging leftover of an interrupted command that nothing holds (strata gc removes it)")
	}
}

// lockHeld reports whether another process holds the flock on an existing
// lock file (without creating it).
func lockHeld(p string) bool {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		unix.Flock(fd, unix.LOCK_UN)
		return false
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}

func (s *Store) fsckLayer(name string, opts FsckOptions, res *FsckResult, bad func(string, string, ...any)) {
	obj := "layer sha256:" + name
	if len(name) != 64 || !hexRe().MatchString(name) {
		bad("layers/sha256/"+name, "not a layer directory (name is not a sha256)")
		return
	}
	dir := s.layerPath("sha256:" + name)
	m, err := s.readLayerMeta("sha256:" + name)
	if err != nil {
		bad(obj, "layer.json: %v", errors.Unwrap(err))
		return
	}
	if m.DiffID != "sha256:"+name {
		bad(obj, "layer.json says diff_id %s", m.DiffID)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "diff")); err != nil || !fi.IsDir() {
		bad(obj, "diff/ is missing")
		return
	}
	f, err := os.Open(filepath.Join(dir, "contents.jsonl"))
	if err != nil {
		bad(obj, "contents.jsonl: %v", errors.Unwrap(err))
		return
	}
	defer f.Close()
	var entries []contentEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var e contentEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			bad(obj, "contents.jsonl line %d does not parse: %v", line, err)
			return
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		bad(obj, "contents.jsonl: %v", err)
		return
	}
	if !opts.Deep {
		return
	}
	root0 := m.OpaqueXattr == "trusted.overlay.opaque"
	for _, p := range compareTree(filepath.Join(dir, "diff"), replay(entries), root0, m.OpaqueXattr, &res.Files) {
		bad(obj, "%s", p)
	}
}

// wantEntry is what a path of a layer must be after its whole tar applied.
type wantEntry struct {
	e       contentEntry
	implied bool // a parent the tar never named: a directory, any mode
	opaque  bool
}

// replay applies the content manifest the way the extractor applied the
// tar: a later entry replaces an earlier one (and everything under it),
// a directory over a directory merges, a hard link is the entry it links
// to, a whiteout replaces what it hides.
func replay(entries []contentEntry) map[string]*wantEntry {
	tree := map[string]*wantEntry{}
	removeUnder := func(p string) {
		if w := tree[p]; w != nil && (w.e.Type == "d" || w.implied) {
			for k := range tree {
				if strings.HasPrefix(k, p+"/") || p == "" {
					delete(tree, k)
				}
			}
		}
		delete(tree, p)
	}
	parents := func(p string) {
		for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
			if tree[d] == nil {
				tree[d] = &wantEntry{implied: true, e: contentEntry{Path: d, Type: "d"}}
			}
		}
	}
	for _, e := range entries {
		p := e.Path
		switch e.Type {
		case "o":
			if p != "" {
				parents(p)
				if tree[p] == nil {
					tree[p] = &wantEntry{implied: true, e: contentEntry{Path: p, Type: "d"}}
				}
				tree[p].opaque = true
			} else {
				if tree[""] == nil {
					tree[""] = &wantEntry{implied: true, e: contentEntry{Type: "d"}}
				}
				tree[""].opaque = true
			}
			continue
		case "d":
			if w := tree[p]; w != nil && w.e.Type == "d" {
				w.e, w.implied = e, false
				continue
			}
			if p == "" {
				tree[""] = &wantEntry{e: e}
				continue
			}
		case "h":
			t := tree[e.Link]
			removeUnder(p)
			parents(p)
			if t != nil {
				c := *t
				c.e.Path = p
				tree[p] = &c
			}
			continue
		}
		if p == "" {
			continue
		}
		removeUnder(p)
		parents(p)
		tree[p] = &wantEntry{e: e}
	}
	return tree
}

// compareTree checks the tree under root against want; it returns one
// message per difference.
func compareTree(root string, want map[string]*wantEntry, root0 bool, opaqueXattr string, files *int) []string {
	var probs []string
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			probs = append(probs, fmt.Sprintf("%s: %v", p, err))
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = ""
		}
		w := want[rel]
		if w == nil && !root0 && strings.HasPrefix(path.Base(rel), ".wh.") {
			// Without privileges a whiteout may be kept in the OCI form.
			if h := want[path.Join(path.Dir(rel), strings.TrimPrefix(path.Base(rel), ".wh."))]; h != nil && h.e.Type == "w" {
				seen[h.e.Path] = true
				return nil
			}
		}
		if w == nil {
			if rel != "" {
				probs = append(probs, fmt.Sprintf("diff/%s: not in the content manifest", rel))
			}
			return nil
		}
		seen[rel] = true
		if msg := compareEntry(p, w, root0, opaqueXattr, files); msg != "" {
			probs = append(probs, fmt.Sprintf("diff/%s: %s", rel, msg))
		}
		return nil
	})
	if err != nil {
		probs = append(probs, err.Error())
	}
	var missing []string
	for p := range want {
		if !seen[p] && p != "" {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	for _, p := range missing {
		probs = append(probs, fmt.Sprintf("diff/%s: missing (the manifest has a %s)", p, typeName(want[p].e.Type)))
	}
	return probs
}

func typeName(t string) string {
	return map[string]string{"f": "file", "d": "directory", "l": "symlink", "c": "char device", "b": "block device",
		"p": "fifo", "w": "whiteout"}[t]
}

func compareEntry(p string, w *wantEntry, root0 bool, opaqueXattr string, files *int) string {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err.Error()
	}
	e := w.e
	fmtType := st.Mode & unix.S_IFMT
	wantFmt := map[string]uint32{"f": unix.S_IFREG, "d": unix.S_IFDIR, "l": unix.S_IFLNK, "c": unix.S_IFCHR, "b": unix.S_IFBLK,
		"p": unix.S_IFIFO, "w": unix.S_IFCHR}[e.Type]
	if !root0 && (e.Type == "c" || e.Type == "b" || e.Type == "p") {
		wantFmt = unix.S_IFREG // an empty file carrying its type in the override xattr
	}
	if fmtType != wantFmt {
		return fmt.Sprintf("is a %s, the manifest has a %s", fileType(fmtType), typeName(e.Type))
	}
	switch e.Type {
	case "f":
		if st.Size != e.Size {
			return fmt.Sprintf("size %d, the manifest says %d", st.Size, e.Size)
		}
		sum, err := hashPath(p)
		if err != nil {
			return err.Error()
		}
		*files++
		if sum != e.SHA256 {
			return fmt.Sprintf("content sha256:%s, the manifest says sha256:%s", sum, e.SHA256)
		}
	case "l":
		// Manifests written before symlink targets were recorded have none.
		if t, err := os.Readlink(p); err != nil || (t != e.Link && e.Link != "") {
			return fmt.Sprintf("symlink to %q, the manifest says %q", t, e.Link)
		}
	case "w":
		if st.Rdev != 0 {
			return fmt.Sprintf("whiteout with device %d,%d, want 0,0", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	case "c", "b":
		if root0 && strconv.FormatUint(uint64(unix.Major(st.Rdev)), 10)+":"+strconv.FormatUint(uint64(unix.Minor(st.Rdev)), 10) != e.Rdev {
			return fmt.Sprintf("device %d:%d, the manifest says %s", unix.Major(st.Rdev), unix.Minor(st.Rdev), e.Rdev)
		}
	}
	if root0 && !w.implied && e.Type != "l" && e.Type != "w" {
		if st.Mode&0o7777 != e.Mode {
			return fmt.Sprintf("mode %04o, the manifest says %04o", st.Mode&0o7777, e.Mode)
		}
		if int(st.Uid) != e.UID || int(st.Gid) != e.GID {
			return fmt.Sprintf("owner %d:%d, the manifest says %d:%d", st.Uid, st.Gid, e.UID, e.GID)
		}
	}
	if w.opaque {
		buf := make([]byte, 8)
		n, err := unix.Lgetxattr(p, opaqueXattr, buf)
		if err != nil || string(buf[:n]) != "y" {
			return "opaque marker (" + opaqueXattr + ") is missing"
		}
	}
	return ""
}

func fileType(m uint32) string {
	return map[uint32]string{unix.S_IFREG: "file", unix.S_IFDIR: "directory", unix.S_IFLNK: "symlink", unix.S_IFCHR: "char device",
		unix.S_IFBLK: "block device", unix.S_IFIFO: "fifo", unix.S_IFSOCK: "socket"}[m]
}

func hashPath(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if err != nil {
		if f, err = os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0); err != nil {
			return "", err
		}
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
