package layerstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func baseLayers(t testing.TB) [][]byte {
	l1 := mkTar(t, dir("etc", 0o755), file("etc/hostname", "one\n", 0o644), file("etc/gone", "x", 0o644),
		dir("data", 0o755), file("data/old", "old", 0o644), symlink("bin", "usr/bin"))
	l2 := mkTar(t, file("etc/hostname", "two\n", 0o644), file("etc/.wh.gone", "", 0),
		dir("data", 0o755), file("data/.wh..wh..opq", "", 0), file("data/new", "new", 0o600))
	return [][]byte{l1, l2}
}

// wantLayers is the extracted form of baseLayers.
var wantLayers = [][]string{
	{". d 0755 0:0", "bin l 0777 0:0 -> usr/bin", "data d 0755 0:0", "data/old f 0644 0:0 size=3 nlink=1",
		"etc d 0755 0:0", "etc/gone f 0644 0:0 size=1 nlink=1", "etc/hostname f 0644 0:0 size=4 nlink=1"},
	{". d 0755 0:0", `data d 0755 0:0 trusted.overlay.opaque="y"`, "data/new f 0600 0:0 size=3 nlink=1",
		"etc d 0755 0:0", "etc/gone c 0000 0:0 0,0", "etc/hostname f 0644 0:0 size=4 nlink=1"},
}

// wantLayer is wantLayers[i] as this user extracts it: not as root, owners
// are the caller's and the opaque xattr is user.overlay.opaque.
func wantLayer(i int) []string {
	if isRoot() {
		return wantLayers[i]
	}
	own := fmt.Sprintf(" %d:%d", os.Getuid(), os.Getgid())
	var out []string
	for _, l := range wantLayers[i] {
		l = strings.Replace(l, " 0:0", own, 1)
		out = append(out, strings.Replace(l, "trusted.overlay.opaque", "user.overlay.opaque", 1))
	}
	return out
}

func TestImportFormats(t *testing.T) {
	layers := baseLayers(t)
	plain := testImage{layers: layers, tags: []string{"example.com/test/img:v1"}, label: "a"}
	gz := plain
	gz.comp = []string{"gzip", "gzip"}
	zs := plain
	zs.comp = []string{"zstd", "gzip"}
	ociTag := plain
	ociTag.tags = []string{"example.com/test/img:v1"}

	cases := []struct {
		name   string
		make   func(t *testing.T) string
		format string
		ref    string
	}{
		{"docker-archive", func(t *testing.T) string { return writeTemp(t, dockerArchive(t, false, plain)) }, "docker-archive", "example.com/test/img:v1"},
		{"docker-archive gzip layers", func(t *testing.T) string { return writeTemp(t, dockerArchive(t, false, gz)) }, "docker-archive", "example.com/test/img:v1"},
		{"docker-archive legacy files, symlinked layer.tar", func(t *testing.T) string { return writeTemp(t, dockerArchive(t, true, plain)) }, "docker-archive", "example.com/test/img:v1"},
		{"docker-archive, whole archive gzipped", func(t *testing.T) string { return writeTemp(t, gzipBytes(t, dockerArchive(t, false, plain))) }, "docker-archive", "example.com/test/img:v1"},
		{"docker-archive, whole archive zstd", func(t *testing.T) string { return writeTemp(t, zstdBytes(t, dockerArchive(t, false, plain))) }, "docker-archive", "example.com/test/img:v1"},
		{"docker-archive through a fifo", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "fifo")
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			b := dockerArchive(t, false, plain)
			go func() { os.WriteFile(p, b, 0o600) }()
			return p
		}, "docker-archive", "example.com/test/img:v1"},
		{"oci dir gzip", func(t *testing.T) string { d := t.TempDir(); ociLayout(t, d, "", false, gz); return d }, "oci", ""},
		{"oci dir zstd+gzip", func(t *testing.T) string { d := t.TempDir(); ociLayout(t, d, "", false, zs); return d }, "oci", ""},
		{"oci dir plain", func(t *testing.T) string { d := t.TempDir(); ociLayout(t, d, "", false, plain); return d }, "oci", ""},
		{"oci mislabelled plain as gzip", func(t *testing.T) string {
			d := t.TempDir()
			ociLayout(t, d, "application/vnd.oci.image.layer.v1.tar+gzip", false, plain)
			return d
		}, "oci", ""},
		{"oci mislabelled gzip as plain", func(t *testing.T) string {
			d := t.TempDir()
			ociLayout(t, d, "application/vnd.oci.image.layer.v1.tar", false, gz)
			return d
		}, "oci", ""},
		{"oci nested index", func(t *testing.T) string { d := t.TempDir(); ociLayout(t, d, "", true, ociTag); return d }, "oci", "example.com/test/img:v1"},
		{"oci archive tar", func(t *testing.T) string {
			d := t.TempDir()
			ociLayout(t, d, "", false, ociTag)
			return writeTemp(t, tarDir(t, d))
		}, "oci", "example.com/test/img:v1"},
	}
	wantID := plain.id(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			res := importOK(t, s, tc.make(t), ImportOptions{})
			if res.Format != tc.format {
				t.Errorf("format %s, want %s", res.Format, tc.format)
			}
			if len(res.Images) != 1 || res.Images[0].ID != wantID {
				t.Fatalf("images %+v, want one with ID %s", res.Images, wantID)
			}
			img := res.Images[0]
			if tc.ref != "" {
				got, err := s.Resolve(tc.ref)
				if err != nil || got.ID != wantID {
					t.Fatalf("Resolve(%s) = %v, %v", tc.ref, got, err)
				}
			}
			if len(img.Layers) != 2 {
				t.Fatalf("%d layers", len(img.Layers))
			}
			for i, l := range img.Layers {
				if got := dumpTree(t, l.Dir); !slices.Equal(got, wantLayer(i)) {
					t.Errorf("layer %d tree:\n%s\nwant:\n%s", i, strings.Join(got, "\n"), strings.Join(wantLayer(i), "\n"))
				}
				if l.CreatedBy == "" || l.Size != int64(len(layers[i])) {
					t.Errorf("layer %d: created_by %q size %d", i, l.CreatedBy, l.Size)
				}
			}
			lower := s.LowerDirs(img)
			if lower[0] != img.Layers[1].Dir || lower[1] != img.Layers[0].Dir {
				t.Errorf("LowerDirs not top-most first: %v", lower)
			}
			// Reimport: nothing extracted.
			res2 := importOK(t, s, tc.make(t), ImportOptions{})
			if res2.Extracted != 0 || res2.Reused != 2 {
				t.Errorf("reimport extracted %d reused %d, want 0/2", res2.Extracted, res2.Reused)
			}
			assertNoStaging(t, s)
		})
	}
}

func assertNoStaging(t *testing.T, s *Store) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if len(ents) != 0 {
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		t.Errorf("tmp not empty: %v", n)
	}
}

func TestImportLegacyV1(t *testing.T) {
	s := newStore(t)
	layers := baseLayers(t)
	p := writeTemp(t, legacyArchive(t, "legacy/app:1.0", layers...))
	res := importOK(t, s, p, ImportOptions{})
	if res.Format != "legacy-v1" || len(res.Images) != 1 {
		t.Fatalf("%+v", res)
	}
	img, err := s.Resolve("legacy/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 || img.Layers[0].DiffID != digestOf(layers[0]) || img.Layers[1].DiffID != digestOf(layers[1]) {
		t.Fatalf("layers %+v", img.Layers)
	}
	if img.Layers[1].CreatedBy != "/bin/sh -c step 2" {
		t.Errorf("created_by %q", img.Layers[1].CreatedBy)
	}
	if len(img.Config.Config.Cmd) != 1 || img.Config.Config.Cmd[0] != "/bin/sh" {
		t.Errorf("config not carried over: %+v", img.Config.Config)
	}
	// Deterministic ID: importing again gives the same image.
	res2 := importOK(t, s, p, ImportOptions{})
	if res2.Images[0].ID != img.ID || res2.Extracted != 0 {
		t.Errorf("reimport: id %s (was %s), extracted %d", res2.Images[0].ID, img.ID, res2.Extracted)
	}
}

func TestImportSeveralImagesShareLayers(t *testing.T) {
	layers := baseLayers(t)
	third := mkTar(t, file("extra", "x", 0o644))
	a := testImage{layers: layers, tags: []string{"a:1"}, label: "a"}
	b := testImage{layers: append(slices.Clone(layers), third), tags: []string{"b:1", "b:latest"}, label: "b"}
	for _, tc := range []struct {
		name string
		make func(t *testing.T) string
	}{
		{"docker-archive", func(t *testing.T) string { return writeTemp(t, dockerArchive(t, false, a, b)) }},
		{"oci", func(t *testing.T) string { d := t.TempDir(); ociLayout(t, d, "", false, a, b); return d }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			res := importOK(t, s, tc.make(t), ImportOptions{})
			if len(res.Images) != 2 || res.Extracted != 3 {
				t.Fatalf("images %d extracted %d, want 2/3", len(res.Images), res.Extracted)
			}
			ents, _ := os.ReadDir(filepath.Join(s.Root(), "layers", "sha256"))
			if len(ents) != 3 {
				t.Errorf("%d layer dirs, want 3", len(ents))
			}
			if tc.name == "docker-archive" {
				for _, r := range []string{"a:1", "b", "docker.io/library/b:1", "b:latest"} {
					if _, err := s.Resolve(r); err != nil {
						t.Errorf("Resolve(%s): %v", r, err)
					}
				}
			}
			// OCI ref names "a:1" are full references too.
			if _, err := s.Resolve("a:1"); err != nil {
				t.Errorf("Resolve(a:1): %v", err)
			}
		})
	}
}

func TestImportTagOption(t *testing.T) {
	s := newStore(t)
	d := t.TempDir()
	im := testImage{layers: baseLayers(t), tags: []string{"latest"}, label: "t"}
	ociLayout(t, d, "", false, im)
	res := importOK(t, s, d, ImportOptions{Tag: "myimg:2"})
	if len(res.Images[0].RepoTags) != 1 || res.Images[0].RepoTags[0] != "myimg:2" {
		t.Errorf("tags %v", res.Images[0].RepoTags)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings %v", res.Warnings)
	}
	// A bare ref name without --tag stays untagged with a warning.
	s2 := newStore(t)
	res = importOK(t, s2, d, ImportOptions{})
	if len(res.Images[0].RepoTags) != 0 || len(res.Warnings) != 1 {
		t.Errorf("tags %v warnings %v", res.Images[0].RepoTags, res.Warnings)
	}
	// --tag with two images is refused.
	two := writeTemp(t, dockerArchive(t, false, im, testImage{layers: baseLayers(t), label: "u"}))
	if _, err := s.Import(context.Background(), two, ImportOptions{Tag: "x:1"}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("--tag with two images: %v", err)
	}
	if _, err := s.Import(context.Background(), d, ImportOptions{Tag: "x:bad:tag"}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("bad --tag: %v", err)
	}
}

func TestImportStdin(t *testing.T) {
	s := newStore(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := gzipBytes(t, dockerArchive(t, false, testImage{layers: baseLayers(t), tags: []string{"stdin:1"}}))
	go func() { w.Write(b); w.Close() }()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	res := importOK(t, s, "-", ImportOptions{})
	if len(res.Images) != 1 || res.Images[0].RepoTags[0] != "stdin:1" {
		t.Errorf("%+v", res.Images)
	}
	assertNoStaging(t, s)
}

func TestSymlinkUserXattrSkipped(t *testing.T) {
	l := symlink("l", "target")
	l.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.x": "1"}
	root, err := extractBytes(t, mkTar(t, l))
	if err != nil {
		t.Fatal(err)
	}
	if got := dumpTree(t, root); !slices.Equal(got, []string{". d 0755 0:0", "l l 0777 0:0 -> target"}) && isRoot() {
		t.Errorf("%v", got)
	}
}
