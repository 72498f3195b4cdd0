package layerstore

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// exportImage is an image of two layers in assorted tar dialects.
func exportImage(t *testing.T) testImage {
	pax := ent{tar.Header{Name: "etc/x", Typeflag: tar.TypeReg, Mode: 0o640, Size: 2, ModTime: time.Unix(1700000000, 5), Format: tar.FormatPAX,
		PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b"}}, "xx"}
	l1 := mkTar(t, dir("etc", 0o755), file("etc/passwd", "root:x:0:0\n", 0o644), pax, symlink("etc/s", "x"), hardlink("etc/h", "etc/passwd"))
	l2 := mkTar(t, dir("etc", 0o755), ent{tar.Header{Name: "etc/.wh.x", Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}, ""},
		file("etc/motd", strings.Repeat("m", 5000), 0o644))
	return testImage{layers: [][]byte{l1, l2}, comp: []string{"", "gzip"}, tags: []string{"example.com/team/app:1.0"}, label: "export"}
}

func exportTo(t *testing.T, s *Store, img *Image, o ExportOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Export(context.Background(), img, &buf, o); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func untar(t *testing.T, b []byte, dir string) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.Symlink(h.Linkname, p)
		default:
			os.MkdirAll(filepath.Dir(p), 0o755)
			c, _ := io.ReadAll(tr)
			os.WriteFile(p, c, 0o644)
		}
	}
}

func TestExportRoundTrip(t *testing.T) {
	ti := exportImage(t)
	s := newStore(t)
	res := importOK(t, s, writeTemp(t, dockerArchive(t, false, ti)), ImportOptions{})
	img := res.Images[0]
	for _, format := range []string{ExportDocker, ExportOCI} {
		t.Run(format, func(t *testing.T) {
			out := exportTo(t, s, img, ExportOptions{Format: format, RepoTags: []string{"example.com/team/app:1.0"}})
			// Deterministic.
			if again := exportTo(t, s, img, ExportOptions{Format: format, RepoTags: []string{"example.com/team/app:1.0"}}); !bytes.Equal(out, again) {
				t.Error("two exports differ")
			}
			p := writeTemp(t, out)
			// Read back by go-containerregistry, every digest checked.
			if format == ExportDocker {
				gi, err := tarball.ImageFromPath(p, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := validate.Image(gi); err != nil {
					t.Fatalf("validate: %v", err)
				}
				var m tarball.Manifest
				b := readTarFile(t, out, "manifest.json")
				json.Unmarshal(b, &m)
				if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "example.com/team/app:1.0" {
					t.Errorf("manifest.json: %s", b)
				}
				if r := readTarFile(t, out, "repositories"); !strings.Contains(string(r), `"example.com/team/app":{"1.0":"`) {
					t.Errorf("repositories: %s", r)
				}
			} else {
				dir := t.TempDir()
				untar(t, out, dir)
				idx, err := layout.ImageIndexFromPath(dir)
				if err != nil {
					t.Fatal(err)
				}
				im, err := idx.IndexManifest()
				if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Annotations[annRefName] != "1.0" {
					t.Fatalf("index: %+v %v", im, err)
				}
				gi, err := idx.Image(im.Manifests[0].Digest)
				if err != nil {
					t.Fatal(err)
				}
				// validate.Image assumes gzip layers; these are plain
				// tars (a valid OCI media type), so check by hand.
				if err := validate.Image(gi, validate.Fast); err != nil {
					t.Fatalf("validate: %v", err)
				}
				layers, _ := gi.Layers()
				for i, l := range layers {
					d, _ := l.Digest()
					diffID, _ := l.DiffID()
					rc, _ := l.Compressed()
					h, n, _ := v1.SHA256(rc)
					rc.Close()
					size, _ := l.Size()
					if h != d || h != diffID || n != size || d.String() != img.Layers[i].DiffID {
						t.Errorf("layer %d: blob %s (%d bytes), digest %s, diffID %s, size %d", i, h, n, d, diffID, size)
					}
				}
				if id, _ := gi.ConfigName(); id.Hex != img.ID {
					t.Errorf("config %s, want %s", id, img.ID)
				}
			}
			// Imported again: the same image, the same name.
			s2 := newStore(t)
			r2 := importOK(t, s2, p, ImportOptions{})
			if len(r2.Images) != 1 || r2.Images[0].ID != img.ID {
				t.Fatalf("re-import gave %v, want image %s", r2.Images, img.ID)
			}
			if got, err := s2.Resolve("example.com/team/app:1.0"); err != nil || got.ID != img.ID {
				t.Errorf("re-imported tag: %v %v", got, err)
			}
		})
	}
}

func readTarFile(t *testing.T, b []byte, name string) []byte {
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the archive", name)
		}
		if h.Name == name {
			c, _ := io.ReadAll(tr)
			return c
		}
	}
}

func TestExportWithoutTarSplit(t *testing.T) {
	s := newStore(t)
	res := importOK(t, s, writeTemp(t, dockerArchive(t, false, exportImage(t))), ImportOptions{})
	img := res.Images[0]
	os.Remove(filepath.Join(s.layerPath(img.Layers[0].DiffID), tarSplitFile))
	var buf bytes.Buffer
	if err := s.Export(context.Background(), img, &buf, ExportOptions{}); err == nil || buf.Len() != 0 {
		t.Fatalf("export without tar-split: err %v, %d bytes written", err, buf.Len())
	}
}

// Commit, then export: the committed layer is reproducible too, and the new
// image carries its history entry.
func TestCommitThenExport(t *testing.T) {
	s := newStore(t)
	res := importOK(t, s, writeTemp(t, dockerArchive(t, false, exportImage(t))), ImportOptions{})
	base := res.Images[0]
	st := newStack(t, 0)
	u := st.upper
	u.dir("etc", 0o755)
	u.file("etc/passwd", "root:x:0:0\nnew:x:1:1\n")
	u.whiteout("etc/motd")
	u.file("new", "new file")
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cr, err := s.Commit(context.Background(), base, CommitOptions{Upper: u.root, Work: st.work, Tag: "committed:v1", Message: "a message", Author: "Someone <s@example.com>", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	img := cr.Image
	if len(img.Layers) != 3 || img.Layers[2].DiffID != cr.DiffID {
		t.Fatalf("layers %+v", img.Layers)
	}
	if img.Layers[2].Comment != "a message" || img.Layers[2].CreatedBy != "strata commit" || !img.Created.Equal(created) {
		t.Errorf("history: %+v created %v", img.Layers[2], img.Created)
	}
	if img.Config.Author != "Someone <s@example.com>" {
		t.Errorf("author %q", img.Config.Author)
	}
	if got, err := s.Resolve("committed:v1"); err != nil || got.ID != img.ID {
		t.Fatalf("tag: %v %v", got, err)
	}
	// The same upper committed again gives the same layer and image.
	cr2, err := s.Commit(context.Background(), base, CommitOptions{Upper: u.root, Work: st.work, Message: "a message", Author: "Someone <s@example.com>", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	if cr2.DiffID != cr.DiffID || cr2.Image.ID != img.ID || !cr2.Reused {
		t.Errorf("second commit: %s %s reused=%v, first %s %s", cr2.DiffID, cr2.Image.ID, cr2.Reused, cr.DiffID, img.ID)
	}
	for _, format := range []string{ExportDocker, ExportOCI} {
		out := exportTo(t, s, img, ExportOptions{Format: format, RepoTags: []string{"committed:v1"}})
		s2 := newStore(t)
		r2 := importOK(t, s2, writeTemp(t, out), ImportOptions{})
		if r2.Images[0].ID != img.ID {
			t.Errorf("%s: re-import gave %s, want %s", format, r2.Images[0].ID, img.ID)
		}
		if format == ExportDocker {
			gi, err := tarball.ImageFromPath(writeTemp(t, out), nil)
			if err == nil {
				err = validate.Image(gi)
			}
			if err != nil {
				t.Errorf("validate: %v", err)
			}
		}
	}
	assertNoStaging(t, s)
}
