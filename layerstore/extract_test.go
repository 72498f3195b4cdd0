package layerstore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// extractBytes extracts one uncompressed layer tar into a new directory.
func extractBytes(t *testing.T, layer []byte) (string, error) {
	t.Helper()
	dest := t.TempDir()
	src := &layerSource{name: "test", size: -1, set: bytesSet(layer)}
	_, err := extractLayer(context.Background(), src, dest, extractOptions{root0: isRoot(), maxRatio: 1000, floor: 1 << 20})
	return filepath.Join(dest, "diff"), err
}

// bytesSet is a fileSet of one blob, whatever the name.
type bytesSet []byte

func (b bytesSet) open(string) (io.ReadCloser, int64, error) {
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}
func (b bytesSet) exists(string) bool { return true }
func (b bytesSet) topNames() []string { return nil }
func (b bytesSet) Close() error       { return nil }

func TestExtractTree(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: owners, devices, trusted/security xattrs")
	}
	nsec := time.Unix(1700000000, 123456789)
	asec := time.Unix(1600000000, 987654321)
	withX := func(e ent, kv ...string) ent {
		e.hdr.PAXRecords = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			e.hdr.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
		}
		return e
	}
	owned := func(e ent, uid, gid int) ent { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }
	timed := func(e ent) ent { e.hdr.ModTime, e.hdr.AccessTime, e.hdr.Format = nsec, asec, tar.FormatPAX; return e }
	dev := func(name string, typ byte, maj, min int64, mode int64) ent {
		return ent{hdr: tar.Header{Name: name, Typeflag: typ, Devmajor: maj, Devminor: min, Mode: mode, ModTime: time.Unix(1000, 0)}}
	}
	layer := mkTar(t,
		timed(dir("d", 0o750)),
		owned(withX(file("d/suid", "binary", 0o4755), "user.a", "1", "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), 1000, 1000),
		hardlink("d/suid-link", "d/suid"),
		owned(symlink("d/ln", "/etc/passwd"), 5, 6),
		timed(file("d/times", "t", 0o644)),
		dir("sticky", 0o1777), dir("sgid", 0o2775),
		dev("p", tar.TypeFifo, 0, 0, 0o644), dev("null", tar.TypeChar, 1, 3, 0o666), dev("loop", tar.TypeBlock, 7, 0, 0o660),
		file("d/.wh.gone", "", 0),
		dir("o", 0o755), file("o/.wh..wh..opq", "", 0),
		withX(file("fake-opaque", "", 0o644), "trusted.overlay.opaque", "y", "user.overlay.redirect", "/x", "user.ok", ""),
		dir("m", 0o755), file("m/x", "x", 0o644), dir("m", 0o700), // dir over dir merges
		file("r", "file", 0o644), dir("r", 0o755), file("r/c", "c", 0o644), // file replaced by dir
		dir("q", 0o755), file("q/c", "c", 0o644), file("q", "now a file", 0o644), // dir replaced by file
		file("dup", "a", 0o644), file("dup", "bb", 0o600), // later wins
		file("/abs/file", "abs", 0o644), // leading / dropped, implied parent
		file("./dot", "dot", 0o644),
		file("implied/deep/f", "f", 0o644),
		withX(dir(".", 0o711), "user.root", "r"),
		withX(dir("xd", 0o755), "user.d", "v"),
	)
	root, err := extractBytes(t, layer)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`. d 0711 0:0 user.root="r"`,
		"abs d 0755 0:0",
		"abs/file f 0644 0:0 size=3 nlink=1",
		"d d 0750 0:0",
		"d/gone c 0000 0:0 0,0",
		"d/ln l 0777 5:6 -> /etc/passwd",
		`d/suid f 4755 1000:1000 size=6 nlink=2 security.capability="\x01\x00\x00\x02\x00 \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",user.a="1"`,
		`d/suid-link f 4755 1000:1000 size=6 nlink=2 security.capability="\x01\x00\x00\x02\x00 \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",user.a="1"`,
		"d/times f 0644 0:0 size=1 nlink=1",
		"dot f 0644 0:0 size=3 nlink=1",
		"dup f 0600 0:0 size=2 nlink=1",
		`fake-opaque f 0644 0:0 size=0 nlink=1 user.ok=""`,
		"implied d 0755 0:0",
		"implied/deep d 0755 0:0",
		"implied/deep/f f 0644 0:0 size=1 nlink=1",
		"loop b 0660 0:0 7,0",
		"m d 0700 0:0",
		"m/x f 0644 0:0 size=1 nlink=1",
		"null c 0666 0:0 1,3",
		`o d 0755 0:0 trusted.overlay.opaque="y"`,
		"p p 0644 0:0",
		"q f 0644 0:0 size=10 nlink=1",
		"r d 0755 0:0",
		"r/c f 0644 0:0 size=1 nlink=1",
		"sgid d 2775 0:0",
		"sticky d 1777 0:0",
		`xd d 0755 0:0 user.d="v"`,
	}
	// Nanosecond times, and a directory's mtime survives its contents
	// (checked before any listing updates a directory's atime).
	for _, p := range []string{"d", "d/times"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mtim.Sec != nsec.Unix() || st.Mtim.Nsec != int64(nsec.Nanosecond()) {
			t.Errorf("%s mtime %d.%09d, want %d.%09d", p, st.Mtim.Sec, st.Mtim.Nsec, nsec.Unix(), nsec.Nanosecond())
		}
		if st.Atim.Sec != asec.Unix() || st.Atim.Nsec != int64(asec.Nanosecond()) {
			t.Errorf("%s atime %d.%09d, want %d.%09d", p, st.Atim.Sec, st.Atim.Nsec, asec.Unix(), asec.Nanosecond())
		}
	}
	if got := dumpTree(t, root); !slices.Equal(got, want) {
		t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var st unix.Stat_t
	unix.Lstat(filepath.Join(root, "d/ln"), &st)
	if st.Mtim.Sec != 1000 {
		t.Errorf("symlink mtime %d, want 1000", st.Mtim.Sec)
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a/b", "a/b"}, {"./a/b/", "a/b"}, {"/abs", "abs"}, {"a/../b", "b"}, {".", ""}, {"./", ""}, {"//x//y", "x/y"},
	} {
		got, err := cleanName(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"..", "../x", "a/../../x", "/../x", "a\x00b", strings.Repeat("a/", 2100), strings.Repeat("n", 256)} {
		if _, err := cleanName(bad); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("cleanName(%.20q...) = %v, want ErrUnsafePath", bad, err)
		}
	}
}

// TestHostile imports hostile layers through the whole importer and checks
// the error class, that the store is unchanged and that nothing was written
// outside.
func TestHostile(t *testing.T) {
	outside := t.TempDir()
	zeros := mkTar(t, file("zeros", string(make([]byte, 8<<20)), 0o644))
	full := mkTar(t, file("a", strings.Repeat("x", 5000), 0o644))
	cases := []struct {
		name  string
		layer []byte
		blob  func(t *testing.T) []byte // stored blob when it differs from layer
		want  []error                   // any of
		opts  ImportOptions
	}{
		{name: "dotdot", layer: mkTar(t, file("../evil", "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "dotdot deep", layer: mkTar(t, dir("a", 0o755), file("a/../../evil", "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "symlink parent absolute", layer: mkTar(t, symlink("a", outside), file("a/passwd", "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "symlink parent relative escape", layer: mkTar(t, symlink("a", "../../../../../../"+outside), file("a/passwd", "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "symlink parent inside", layer: mkTar(t, dir("b", 0o755), symlink("a", "b"), file("a/x", "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "symlink parent for mkdir", layer: mkTar(t, symlink("a", outside), dir("a/sub", 0o755)), want: []error{ErrUnsafePath}},
		{name: "symlink parent for whiteout", layer: mkTar(t, symlink("a", outside), file("a/.wh.x", "", 0)), want: []error{ErrUnsafePath}},
		{name: "symlink parent for opaque", layer: mkTar(t, symlink("a", outside), file("a/.wh..wh..opq", "", 0)), want: []error{ErrUnsafePath}},
		{name: "dir replaced by symlink, then written through", layer: mkTar(t, dir("d", 0o755), file("d/a", "a", 0o644), symlink("d", outside), file("d/passwd", "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "hardlink outside", layer: mkTar(t, hardlink("h", "../../../../etc/passwd")), want: []error{ErrUnsafePath}},
		{name: "hardlink absolute host file", layer: mkTar(t, hardlink("h", "/etc/passwd")), want: []error{ErrUnsafePath}},
		{name: "hardlink not yet extracted", layer: mkTar(t, hardlink("h", "later"), file("later", "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "hardlink through symlink", layer: mkTar(t, symlink("s", "/etc"), hardlink("h", "s/passwd")), want: []error{ErrUnsafePath}},
		{name: "hardlink to symlink to outside file is a link to the symlink", layer: mkTar(t, symlink("s", "/etc/passwd"), hardlink("h", "s"), file("x", "", 0o644), file("../bad", "", 0)), want: []error{ErrUnsafePath}},
		{name: "hardlink to dir", layer: mkTar(t, dir("d", 0o755), hardlink("h", "d")), want: []error{ErrUnsafePath}},
		{name: "whiteout of dot", layer: mkTar(t, dir("d", 0o755), file("d/.wh..", "", 0)), want: []error{ErrUnsafePath}},
		{name: "NUL in name", layer: rawTar(map[string]string{"path": "a\x00b"}, "x"), want: []error{ErrUnsafePath, ErrInvalidImage}},
		{name: "name over PATH_MAX", layer: rawTar(map[string]string{"path": strings.Repeat("d/", 2500) + "f"}, "x"), want: []error{ErrUnsafePath}},
		{name: "component over NAME_MAX", layer: mkTar(t, file(strings.Repeat("n", 300), "x", 0o644)), want: []error{ErrUnsafePath}},
		{name: "truncated tar", layer: full[:3000], want: []error{ErrTruncated}},
		{name: "truncated gzip", layer: full, blob: func(t *testing.T) []byte { g := gzipBytes(t, full); return g[:len(g)/2] }, want: []error{ErrTruncated}},
		{name: "truncated zstd", layer: full, blob: func(t *testing.T) []byte { z := zstdBytes(t, full); return z[:len(z)-8] }, want: []error{ErrTruncated}},
		{name: "gzip bomb", layer: zeros, blob: func(t *testing.T) []byte { return gzipBytes(t, zeros) }, want: []error{ErrDecompressionBomb}, opts: ImportOptions{MaxRatio: 100, RatioFloor: 1 << 20}},
		{name: "zstd bomb", layer: zeros, blob: func(t *testing.T) []byte { return zstdBytes(t, zeros) }, want: []error{ErrDecompressionBomb}, opts: ImportOptions{MaxRatio: 100, RatioFloor: 1 << 20}},
		{name: "garbage gzip", layer: full, blob: func(t *testing.T) []byte { return append([]byte{0x1f, 0x8b, 8, 0}, make([]byte, 100)...) }, want: []error{ErrInvalidImage, ErrTruncated, ErrDigestMismatch}},
	}
	good := mkTar(t, file("good", "fine", 0o644))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			im := testImage{layers: [][]byte{good, tc.layer}, tags: []string{"hostile:1"}, label: tc.name}
			if tc.blob != nil {
				im.override = [][]byte{nil, tc.blob(t)}
			}
			_, err := s.Import(context.Background(), writeTemp(t, dockerArchive(t, false, im)), tc.opts)
			if err == nil {
				t.Fatal("import succeeded")
			}
			ok := false
			for _, w := range tc.want {
				ok = ok || errors.Is(err, w)
			}
			if !ok {
				t.Errorf("error %v, want one of %v", err, tc.want)
			}
			assertStoreEmpty(t, s)
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("wrote outside the layer: %v", ents)
			}
		})
	}
}

func assertStoreEmpty(t *testing.T, s *Store) {
	t.Helper()
	for _, d := range []string{"layers/sha256", "images", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(s.Root(), d)); len(ents) != 0 {
			t.Errorf("%s not empty after failed import: %d entries", d, len(ents))
		}
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "repositories.json")); err == nil {
		t.Errorf("repositories.json written by a failed import")
	}
}

func TestDigestMismatch(t *testing.T) {
	layers := baseLayers(t)
	t.Run("diffID", func(t *testing.T) {
		s := newStore(t)
		im := testImage{layers: layers, tags: []string{"x:1"}, badDiffID: 2}
		_, err := s.Import(context.Background(), writeTemp(t, dockerArchive(t, false, im)), ImportOptions{})
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), digestOf(layers[1])) || !strings.Contains(err.Error(), digestOf([]byte("something else"))) {
			t.Errorf("error %v: want ErrDigestMismatch naming both digests", err)
		}
		assertStoreEmpty(t, s)
	})
	t.Run("oci blob", func(t *testing.T) {
		s := newStore(t)
		d := t.TempDir()
		im := testImage{layers: layers, comp: []string{"gzip", "gzip"}}
		ociLayout(t, d, "", false, im)
		// Replace the second layer blob's content, keep its name.
		bad := filepath.Join(d, "blobs", "sha256", digestOf(im.blob(t, 1))[7:])
		os.WriteFile(bad, gzipBytes(t, mkTar(t, file("other", "content", 0o644))), 0o644)
		_, err := s.Import(context.Background(), d, ImportOptions{})
		if !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("error %v, want ErrDigestMismatch", err)
		}
		assertStoreEmpty(t, s)
	})
	t.Run("oci blob corrupted in the middle", func(t *testing.T) {
		s := newStore(t)
		d := t.TempDir()
		big := mkTar(t, file("a", strings.Repeat("abcdefgh", 4096), 0o644), file("b", strings.Repeat("12345678", 4096), 0o644))
		im := testImage{layers: [][]byte{big}, comp: []string{"gzip"}}
		ociLayout(t, d, "", false, im)
		p := filepath.Join(d, "blobs", "sha256", digestOf(im.blob(t, 0))[7:])
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0xff
		os.WriteFile(p, b, 0o644)
		_, err := s.Import(context.Background(), d, ImportOptions{})
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), digestOf(b)) {
			t.Errorf("error %v, want ErrDigestMismatch naming %s", err, digestOf(b))
		}
		assertStoreEmpty(t, s)
	})
	t.Run("oci config", func(t *testing.T) {
		s := newStore(t)
		d := t.TempDir()
		im := testImage{layers: layers}
		ociLayout(t, d, "", false, im)
		os.WriteFile(filepath.Join(d, "blobs", "sha256", im.id(t)), []byte(`{"rootfs":{}}`), 0o644)
		if _, err := s.Import(context.Background(), d, ImportOptions{}); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("error %v, want ErrDigestMismatch", err)
		}
		assertStoreEmpty(t, s)
	})
	t.Run("reused layer with a new bad blob", func(t *testing.T) {
		s := newStore(t)
		importOK(t, s, writeTemp(t, dockerArchive(t, false, testImage{layers: layers, label: "first"})), ImportOptions{})
		d := t.TempDir()
		im := testImage{layers: layers, comp: []string{"gzip", "gzip"}, label: "second"}
		ociLayout(t, d, "", false, im)
		bad := filepath.Join(d, "blobs", "sha256", digestOf(im.blob(t, 1))[7:])
		os.WriteFile(bad, gzipBytes(t, mkTar(t, file("other", "content", 0o644))), 0o644)
		if _, err := s.Import(context.Background(), d, ImportOptions{}); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("error %v, want ErrDigestMismatch", err)
		}
	})
}

// A later entry with the name of a hard link replaces the link; it never
// writes through it into the other name.
func TestOverwriteHardlinkDoesNotWriteThrough(t *testing.T) {
	root, err := extractBytes(t, mkTar(t, file("f", "original", 0o644), hardlink("h", "f"), file("h", "new content", 0o644)))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "original" {
		t.Errorf("f = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "h")); string(b) != "new content" {
		t.Errorf("h = %q", b)
	}
}
