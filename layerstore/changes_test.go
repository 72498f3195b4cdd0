package layerstore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Synthetic writable layers in the format fs writes (whiteout devices, or
// .wh. files when unprivileged; overlay xattrs in the trusted or user
// namespace as fs chooses; work/index keyed by the lower file's dev-ino).

type testTree struct {
	t    testing.TB
	root string
}

var tmOld = time.Unix(1_600_000_000, 0)

func newTestTree(t testing.TB, root string) testTree {
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(root, tmOld, tmOld)
	return testTree{t, root}
}

func (tt testTree) p(rel string) string { return filepath.Join(tt.root, rel) }

func (tt testTree) dir(rel string, mode os.FileMode) {
	if err := os.MkdirAll(tt.p(rel), 0o755); err != nil {
		tt.t.Fatal(err)
	}
	os.Chmod(tt.p(rel), mode)
	os.Chtimes(tt.p(rel), tmOld, tmOld)
}

func (tt testTree) file(rel, content string) {
	if err := os.WriteFile(tt.p(rel), []byte(content), 0o644); err != nil {
		tt.t.Fatal(err)
	}
	os.Chtimes(tt.p(rel), tmOld, tmOld)
}

func (tt testTree) link(target, rel string) {
	if err := os.Link(tt.p(target), tt.p(rel)); err != nil {
		tt.t.Fatal(err)
	}
}

func (tt testTree) whiteout(rel string) {
	if err := unix.Mknod(tt.p(rel), unix.S_IFCHR, 0); err != nil {
		if !isRoot() {
			dir, base := filepath.Split(tt.p(rel))
			tt.file(filepath.Join(strings.TrimPrefix(dir, tt.root), ".wh."+base), "")
			return
		}
		tt.t.Fatal(err)
	}
}

func overlayPrefix() string {
	if isRoot() {
		return "trusted.overlay."
	}
	return "user.overlay."
}

func (tt testTree) xattr(rel, name, value string) {
	if err := unix.Lsetxattr(tt.p(rel), name, []byte(value), 0); err != nil {
		tt.t.Fatalf("setxattr %s %s: %v", rel, name, err)
	}
}

func (tt testTree) opaque(rel string)                { tt.xattr(rel, overlayPrefix()+"opaque", "y") }
func (tt testTree) redirect(rel, target string)      { tt.xattr(rel, overlayPrefix()+"redirect", target) }
func (tt testTree) touchDir(rel string, t time.Time) { os.Chtimes(tt.p(rel), t, t) }

// stack is lowers (top first), an upper and a work dir.
type stack struct {
	lowers []testTree
	upper  testTree
	work   string
}

func newStack(t *testing.T, nLowers int) *stack {
	base := t.TempDir()
	s := &stack{upper: newTestTree(t, filepath.Join(base, "upper")), work: filepath.Join(base, "work")}
	for i := 0; i < nLowers; i++ {
		s.lowers = append(s.lowers, newTestTree(t, filepath.Join(base, fmt.Sprintf("lower%d", i))))
	}
	os.MkdirAll(filepath.Join(s.work, "index"), 0o700)
	return s
}

func (s *stack) src() UpperLayers {
	var ls []string
	for _, l := range s.lowers {
		ls = append(ls, l.root)
	}
	return UpperLayers{Upper: s.upper.root, Work: s.work, Lowers: ls}
}

// index copies lower file rel up into work/index and links it at upperRel.
func (s *stack) index(lower testTree, rel, content, upperRel string) {
	var st unix.Stat_t
	if err := unix.Lstat(lower.p(rel), &st); err != nil {
		s.lowers[0].t.Fatal(err)
	}
	key := strconv.FormatUint(st.Dev, 16) + "-" + strconv.FormatUint(st.Ino, 16)
	p := filepath.Join(s.work, "index", key)
	os.WriteFile(p, []byte(content), 0o644)
	os.Chtimes(p, tmOld, tmOld)
	if upperRel != "" {
		if err := os.Link(p, s.upper.p(upperRel)); err != nil {
			s.lowers[0].t.Fatal(err)
		}
	}
}

// tarList lists a layer tar: "name" plus " -> link" for hard links.
func tarList(t *testing.T, b []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		s := h.Name
		if h.Typeflag == tar.TypeLink {
			s += " => " + h.Linkname
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			c, _ := io.ReadAll(tr)
			s += " =" + string(c)
		}
		out = append(out, s)
	}
}

// mergedDump lists the merged tree of src the way the mount shows it.
func mergedDump(t *testing.T, src UpperLayers) []string {
	t.Helper()
	u, err := openUnion(src)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	m, l, err := u.roots()
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	l.close()
	var out []string
	var walk func(p string, d *udir)
	walk = func(p string, d *udir) {
		names, err := u.listing(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			e, err := u.lookup(d, n, true)
			if err != nil {
				t.Fatal(err)
			}
			if e == nil {
				continue
			}
			line := fmt.Sprintf("%s %o %d:%d", p+"/"+n, e.st.Mode, e.st.Uid, e.st.Gid)
			switch e.st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				fd, err := openat2(e.root, e.rel, unix.O_RDONLY)
				if err != nil {
					t.Fatal(err)
				}
				f := os.NewFile(uintptr(fd), "")
				h := sha256.New()
				io.Copy(h, f)
				f.Close()
				line += " " + hex.EncodeToString(h.Sum(nil))[:12] + " " + strconv.FormatInt(e.st.Mtim.Sec, 10)
			case unix.S_IFLNK:
				b := make([]byte, 4096)
				dir, base := filepath.Split(e.rel)
				pfd, _ := openat2(e.root, orDot(strings.TrimSuffix(dir, "/")), unix.O_RDONLY|unix.O_DIRECTORY)
				k, _ := unix.Readlinkat(pfd, base, b)
				unix.Close(pfd)
				line += " -> " + string(b[:k])
			}
			var xs [][2]string
			if e.isDir() {
				xs, _ = u.xattrsOf(e.dir.insts[0].fd, "")
			}
			line += fmt.Sprint(xs)
			out = append(out, line)
			if e.isDir() {
				walk(p+"/"+n, e.dir)
				e.dir.close()
			}
		}
	}
	walk("", m)
	return out
}

// applyLayer extracts a layer tar and returns the stack with it as the
// top read-only layer (as the image after commit is).
func applyLayer(t *testing.T, s *stack, layer []byte) UpperLayers {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "committed")
	os.Mkdir(dest, 0o700)
	src := &layerSource{name: "committed", diffID: digestOf(layer), size: -1, set: bytesSet(layer)}
	if _, err := extractLayer(context.Background(), src, dest, extractOptions{root0: isRoot(), warn: t.Logf}); err != nil {
		t.Fatalf("extract committed layer: %v", err)
	}
	orig := s.src()
	// The committed layer as "upper" (no work dir: nothing indexed).
	return UpperLayers{Upper: filepath.Join(dest, "diff"), Lowers: orig.Lowers}
}

func TestDiffAndWriteLayer(t *testing.T) {
	long := strings.Repeat("L", 251) + ".txt" // 255 bytes: no room for ".wh."
	cases := []struct {
		name      string
		build     func(s *stack)
		diff      []string
		tar       []string
		needsRoot bool
	}{
		{
			name: "add modify delete, copied-up parent",
			build: func(s *stack) {
				l := s.lowers[0]
				l.dir("a", 0o755)
				l.dir("a/sub", 0o755)
				l.file("a/f1", "one")
				l.file("a/f2", "two")
				l.file("a/sub/x", "x")
				l.dir("b", 0o755)
				l.file("b/keep", "keep")
				u := s.upper
				u.dir("a", 0o755)
				u.file("a/f1", "ONE")
				u.file("a/new", "new")
				u.whiteout("a/f2")
				u.touchDir("a", tmOld)
			},
			diff: []string{"C /a", "C /a/f1", "D /a/f2", "A /a/new"},
			tar:  []string{"a/", "a/f1 =ONE", "a/.wh.f2", "a/new =new"},
		},
		{
			name: "copied-up dir with nothing changed",
			build: func(s *stack) {
				s.lowers[0].dir("c", 0o755)
				s.lowers[0].file("c/f", "f")
				s.lowers[0].touchDir("c", tmOld)
				s.upper.dir("c", 0o755)
			},
		},
		{
			name: "chmod of a lower dir",
			build: func(s *stack) {
				s.lowers[0].dir("m", 0o755)
				s.lowers[0].file("m/f", "f")
				s.upper.dir("m", 0o700)
			},
			diff: []string{"C /m"},
			tar:  []string{"m/"},
		},
		{
			name: "removed and made again: opaque",
			build: func(s *stack) {
				l := s.lowers[0]
				l.dir("d", 0o755)
				l.dir("d/sub", 0o755)
				l.file("d/x", "x")
				l.file("d/y", "y")
				l.file("d/sub/z", "z")
				u := s.upper
				u.dir("d", 0o755)
				u.file("d/x", "X")
				u.file("d/w", "w")
				u.opaque("d")
			},
			diff: []string{"C /d", "D /d/sub", "A /d/w", "C /d/x", "D /d/y"},
			tar:  []string{"d/", "d/.wh..wh..opq", "d/w =w", "d/x =X"},
		},
		{
			name: "renamed lower dir: redirect expanded",
			build: func(s *stack) {
				l := s.lowers[1]
				l.dir("src", 0o755)
				l.dir("src/s", 0o755)
				l.file("src/f", "f")
				l.file("src/s/g", "g")
				s.lowers[0].dir("src", 0o755)
				s.lowers[0].file("src/top", "top")
				u := s.upper
				u.whiteout("src")
				u.dir("dst", 0o755)
				u.redirect("dst", "/src")
				u.file("dst/f", "F")
			},
			diff: []string{"A /dst", "A /dst/f", "A /dst/s", "A /dst/s/g", "A /dst/top", "D /src"},
			tar:  []string{"dst/", "dst/f =F", "dst/s/", "dst/s/g =g", "dst/top =top", ".wh.src"},
		},
		{
			name: "renamed lower dir onto a lower dir's name: opaque",
			build: func(s *stack) {
				l := s.lowers[0]
				l.dir("p", 0o755)
				l.dir("p/old", 0o755)
				l.file("p/old/o", "o")
				l.dir("p/new", 0o755)
				l.file("p/new/gone", "gone")
				u := s.upper
				u.dir("p", 0o755)
				u.whiteout("p/old")
				u.dir("p/new", 0o755)
				u.redirect("p/new", "old")
				u.touchDir("p", tmOld)
			},
			diff: []string{"C /p", "C /p/new", "D /p/new/gone", "A /p/new/o", "D /p/old"},
			tar:  []string{"p/", "p/new/", "p/new/.wh..wh..opq", "p/new/o =o", "p/.wh.old"},
		},
		{
			name: "hard-linked lower file copied up to the index",
			build: func(s *stack) {
				l := s.lowers[0]
				l.dir("h", 0o755)
				l.dir("other", 0o755)
				l.file("h/a", "old")
				l.link("h/a", "h/b")
				l.link("h/a", "other/c")
				s.upper.dir("h", 0o755)
				s.index(l, "h/a", "NEW", "h/a")
				s.upper.touchDir("h", tmOld)
			},
			diff: []string{"C /h", "C /h/a", "C /h/b", "C /other", "C /other/c"},
			tar:  []string{"h/", "h/a =NEW", "h/b => h/a", "other/", "other/c => h/a"},
		},
		{
			name: "deleted name too long for a whiteout: parent replaced",
			build: func(s *stack) {
				l := s.lowers[0]
				l.dir("n", 0o755)
				l.file("n/"+long, "long")
				l.file("n/k", "k")
				s.upper.dir("n", 0o755)
				s.upper.whiteout("n/" + long)
				s.upper.touchDir("n", tmOld)
			},
			diff:      []string{"C /n", "D /n/" + long},
			tar:       []string{"n/", "n/.wh..wh..opq", "n/k =k"},
			needsRoot: true, // the .wh. form cannot exist either
		},
		{
			name: "type changes",
			build: func(s *stack) {
				l := s.lowers[0]
				l.dir("t1", 0o755)
				l.file("t1/c", "c")
				l.file("t2", "file")
				u := s.upper
				u.file("t1", "now a file")
				u.dir("t2", 0o755)
				u.file("t2/c", "child")
			},
			diff: []string{"C /t1", "C /t2", "A /t2/c"},
			tar:  []string{"t1 =now a file", "t2/", "t2/c =child"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needsRoot && !isRoot() {
				t.Skip("needs root")
			}
			s := newStack(t, 2)
			tc.build(s)
			changes, err := Diff(s.src())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range changes {
				got = append(got, c.Kind.String()+" "+c.Path)
			}
			if strings.Join(got, "\n") != strings.Join(tc.diff, "\n") {
				t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.diff, "\n"))
			}
			var buf bytes.Buffer
			if _, err := WriteLayer(&buf, s.src()); err != nil {
				t.Fatal(err)
			}
			if g := tarList(t, buf.Bytes()); strings.Join(g, "\n") != strings.Join(tc.tar, "\n") {
				t.Errorf("layer tar:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(tc.tar, "\n"))
			}
			// Deterministic: the same upper gives the same bytes.
			var again bytes.Buffer
			WriteLayer(&again, s.src())
			if !bytes.Equal(buf.Bytes(), again.Bytes()) {
				t.Error("two layer tars of the same upper differ")
			}
			// The layer applied over the lowers gives what the mount showed.
			want := mergedDump(t, s.src())
			got = mergedDump(t, applyLayer(t, s, buf.Bytes()))
			if d := diffStrings(want, got); d != "" {
				t.Errorf("lowers + committed layer differ from lowers + upper:\n%s", d)
			}
		})
	}
}

func diffStrings(a, b []string) string {
	var out []string
	inB := map[string]bool{}
	for _, l := range b {
		inB[l] = true
	}
	inA := map[string]bool{}
	for _, l := range a {
		inA[l] = true
		if !inB[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range b {
		if !inA[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// WriteLayer keeps what the tar format can carry of each entry.
func TestWriteLayerMetadata(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root for owners and devices")
	}
	s := newStack(t, 1)
	u := s.upper
	u.file("f", "data")
	os.Chown(u.p("f"), 1000, 1001)
	unix.Chmod(u.p("f"), 0o4751)
	ns := time.Unix(1_700_000_000, 123456789)
	os.Chtimes(u.p("f"), ns, ns)
	u.xattr("f", "user.k", "v\x00w")
	u.xattr("f", "trusted.overlay.strata.origin", "42") // private: dropped
	u.xattr("f", "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	os.Symlink("../target", u.p("sym"))
	unix.Mknod(u.p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
	unix.Mkfifo(u.p("fifo"), 0o600)
	var buf bytes.Buffer
	if _, err := WriteLayer(&buf, s.src()); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	got := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got[h.Name] = h
	}
	f := got["f"]
	if f == nil || f.Uid != 1000 || f.Gid != 1001 || f.Mode != 0o4751 || !f.ModTime.Equal(ns) || !f.AccessTime.IsZero() {
		t.Errorf("f: %+v", f)
	}
	if f != nil && (f.PAXRecords["SCHILY.xattr.user.k"] != "v\x00w" || f.PAXRecords["SCHILY.xattr.security.capability"] == "" ||
		f.PAXRecords["SCHILY.xattr.trusted.overlay.strata.origin"] != "") {
		t.Errorf("f xattrs: %q", f.PAXRecords)
	}
	if h := got["sym"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "../target" {
		t.Errorf("sym: %+v", h)
	}
	if h := got["null"]; h == nil || h.Typeflag != tar.TypeChar || h.Devmajor != 1 || h.Devminor != 3 {
		t.Errorf("null: %+v", h)
	}
	if h := got["fifo"]; h == nil || h.Typeflag != tar.TypeFifo || h.Mode != 0o600 {
		t.Errorf("fifo: %+v", h)
	}
}
