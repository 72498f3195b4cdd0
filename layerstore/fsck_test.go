package layerstore_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/layerstore"
	"github.com/strata-fs/strata/layerstore/hostile"
)

func openWithBase(t *testing.T) (*layerstore.Store, *layerstore.Image) {
	t.Helper()
	s, err := layerstore.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := hostile.GoodImage(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(context.Background(), p, layerstore.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	img, err := s.Resolve("hostile/base:1")
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

func fsck(t *testing.T, s *layerstore.Store, deep bool) *layerstore.FsckResult {
	t.Helper()
	res, err := s.Fsck(layerstore.FsckOptions{Deep: deep})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A store holding every image the hostile corpus accepts (hard links,
// replaced entries, whiteouts, opaque dirs, devices, setuid, sparse files)
// is clean: the replay of each content manifest matches its tree.
func TestFsckCleanAfterCorpus(t *testing.T) {
	s, _ := openWithBase(t)
	in := t.TempDir()
	n := 0
	for _, c := range hostile.Cases() {
		if c.Refused() {
			continue
		}
		p, err := c.Build(in, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Import(context.Background(), p, layerstore.ImportOptions{}); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		n++
	}
	res := fsck(t, s, true)
	for _, p := range res.Problems {
		t.Errorf("problem: %s", p)
	}
	if res.Images != n+1 || res.Layers < n+1 || res.Files == 0 {
		t.Errorf("checked %d images, %d layers, %d files; want %d images", res.Images, res.Layers, res.Files, n+1)
	}
}

// Each way of damaging a store is reported, by the deep check at least.
func TestFsckFindsDamage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		deep    bool
		root    bool // needs root (modes, owners)
		damage  func(t *testing.T, s *layerstore.Store, top string)
		want    string
		onlyOne bool
	}{
		{name: "file content changed", deep: true, want: "etc/hostname: content sha256:", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				write(t, filepath.Join(top, "etc/hostname"), "BASE\n")
			}},
		{name: "file truncated", deep: true, want: "etc/hostname: size 0, the manifest says 5", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) { write(t, filepath.Join(top, "etc/hostname"), "") }},
		{name: "file removed", deep: true, want: "etc/hostname: missing (the manifest has a file)", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) { rm(t, filepath.Join(top, "etc/hostname")) }},
		{name: "file added", deep: true, want: "diff/etc/evil: not in the content manifest", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) { write(t, filepath.Join(top, "etc/evil"), "x") }},
		{name: "file replaced by a symlink", deep: true, want: "etc/hostname: is a symlink, the manifest has a file", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				rm(t, filepath.Join(top, "etc/hostname"))
				if err := os.Symlink("/etc/hostname", filepath.Join(top, "etc/hostname")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "mode changed", deep: true, root: true, want: "etc/hostname: mode 4755, the manifest says 0644", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				if err := unix.Chmod(filepath.Join(top, "etc/hostname"), 0o4755); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "owner changed", deep: true, root: true, want: "etc: owner 1000:1000, the manifest says 0:0", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				if err := os.Lchown(filepath.Join(top, "etc"), 1000, 1000); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "layer dir removed", want: "is missing",
			damage: func(t *testing.T, s *layerstore.Store, top string) { rmAll(t, filepath.Dir(top)) }},
		{name: "diff dir removed", want: "diff/ is missing", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) { rmAll(t, top) }},
		{name: "layer.json not JSON", want: "layer.json: invalid character", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				write(t, filepath.Join(filepath.Dir(top), "layer.json"), "{oops")
			}},
		{name: "contents.jsonl not JSON", want: "contents.jsonl line 1 does not parse", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				write(t, filepath.Join(filepath.Dir(top), "contents.jsonl"), "not json\n")
			}},
		{name: "contents.jsonl removed", want: "contents.jsonl: no such file", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				rm(t, filepath.Join(filepath.Dir(top), "contents.jsonl"))
			}},
		{name: "image.json not JSON", want: "image.json: unexpected end of JSON input", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) { write(t, imageFile(t, s, "image.json"), "") }},
		{name: "config changed", want: "config.json hashes to sha256:", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				b, err := os.ReadFile(imageFile(t, s, "config.json"))
				if err != nil {
					t.Fatal(err)
				}
				write(t, imageFile(t, s, "config.json"), string(b)+" ")
			}},
		{name: "image dir removed", want: "points at image", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				rmAll(t, filepath.Dir(imageFile(t, s, "config.json")))
			}},
		{name: "tag to a missing image", want: "tag docker.io/hostile/ghost:1: points at image 000000000000, which does not exist", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				p := filepath.Join(s.Root(), "repositories.json")
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				ghost := `"docker.io/hostile/ghost": {"docker.io/hostile/ghost:1": "sha256:` + strings.Repeat("0", 64) + `"},`
				write(t, p, strings.Replace(string(b), `"Repositories": {`, `"Repositories": {`+ghost, 1))
			}},
		{name: "repositories.json not JSON", want: "repositories.json: repositories.json: invalid character", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				write(t, filepath.Join(s.Root(), "repositories.json"), "{]")
			}},
		{name: "staging leftover", want: "tmp/import-dead: staging leftover", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				if err := os.MkdirAll(filepath.Join(s.Root(), "tmp", "import-dead", "layer-0"), 0o700); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "stray layer dir", want: "layers/sha256/junk: not a layer directory", onlyOne: true,
			damage: func(t *testing.T, s *layerstore.Store, top string) {
				if err := os.Mkdir(filepath.Join(s.Root(), "layers", "sha256", "junk"), 0o700); err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && (os.Geteuid() != 0 || layerstore.InUserNamespace()) {
				t.Skip("modes and owners are checked in stores made by root")
			}
			s, img := openWithBase(t)
			if res := fsck(t, s, true); len(res.Problems) != 0 {
				t.Fatalf("fresh store: %v", res.Problems)
			}
			tc.damage(t, s, img.Layers[1].Dir)
			res := fsck(t, s, tc.deep)
			found := false
			var lines []string
			for _, p := range res.Problems {
				lines = append(lines, p.String())
				found = found || strings.Contains(p.String(), tc.want)
			}
			if !found || (tc.onlyOne && len(lines) != 1) {
				t.Errorf("problems:\n%s\nwant one containing %q", strings.Join(lines, "\n"), tc.want)
			}
			if !tc.deep {
				return
			}
			if shallow := fsck(t, s, false); len(shallow.Problems) != 0 {
				t.Errorf("the shallow check found %v: it must not read layer contents", shallow.Problems)
			}
		})
	}
}

func imageFile(t *testing.T, s *layerstore.Store, name string) string {
	t.Helper()
	img, err := s.Resolve("hostile/base:1")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(s.Root(), "images", img.ID, name)
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func rm(t *testing.T, p string) {
	t.Helper()
	if err := unix.Unlink(p); err != nil {
		t.Fatal(err)
	}
}

func rmAll(t *testing.T, p string) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
}
