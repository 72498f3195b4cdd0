package layerstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/strata-fs/strata/layerstore"
	"github.com/strata-fs/strata/layerstore/hostile"
)

// TestHostileCorpus runs every case of the hostile corpus through
// Store.Import against a store that already holds an image: a refused case
// must fail with its sentinel and message and leave the store and the
// canary beside it exactly as they were; an accepted one must give its
// tree (checked as root, the policy the trees describe).
func TestHostileCorpus(t *testing.T) {
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	if err := os.MkdirAll(filepath.Join(canary, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "secret"), []byte("canary\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := layerstore.Open(filepath.Join(base, "store"))
	if err != nil {
		t.Fatal(err)
	}
	in := t.TempDir()
	goodImage, err := hostile.GoodImage(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(context.Background(), goodImage, layerstore.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	snapshot := func() []string {
		t.Helper()
		l, err := hostile.Listing(base)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	cases := hostile.Cases()
	if len(cases) < 40 {
		t.Errorf("corpus has %d cases, want at least 40", len(cases))
	}
	refused := 0
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			p, err := c.Build(in, canary)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			defer os.RemoveAll(p)
			before := snapshot()
			tag, ratio := c.ImportArgs()
			res, err := s.Import(context.Background(), p, layerstore.ImportOptions{Tag: tag, MaxRatio: ratio})
			if c.Refused() {
				refused++
				if err == nil {
					t.Fatalf("imported %d images, want an error wrapping %v", len(res.Images), c.Err)
				}
				if !errors.Is(err, c.Err) || !strings.Contains(err.Error(), c.Msg) {
					t.Errorf("error %.400q\nwant one wrapping %q and containing %q", err, c.Err, c.Msg)
				}
				if after := snapshot(); !slices.Equal(before, after) {
					t.Fatalf("store or canary changed:\n%s", hostile.Diff(before, after, 20))
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %.400v", err)
			}
			img, err := s.Resolve(c.Ref)
			if err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 && !layerstore.InUserNamespace() {
				got, err := hostile.Listing(img.Layers[len(img.Layers)-1].Dir)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, c.Tree) {
					t.Errorf("tree:\n%s\nwant:\n%s\ndiff:\n%s", strings.Join(got, "\n"), strings.Join(c.Tree, "\n"), hostile.Diff(c.Tree, got, 20))
				}
			}
			// Removing the image and collecting its layer restores the store.
			if _, err := s.Remove(c.Ref); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GC(); err != nil {
				t.Fatal(err)
			}
			if after := snapshot(); !slices.Equal(before, after) {
				t.Fatalf("store after rmi+gc differs:\n%s", hostile.Diff(before, after, 20))
			}
		})
	}
	t.Logf("%d cases: %d refused, %d accepted", len(cases), refused, len(cases)-refused)
}
