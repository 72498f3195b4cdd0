//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-fs/strata/layerstore/hostile"
)

// TestReliabilityHostileImport runs `strata import` on every archive of the
// hostile corpus (layerstore/hostile) against a store that already holds an
// image. A refused archive must exit 1 with exactly one stderr line that
// names the problem, and leave the store and a canary directory beside it
// exactly as they were (full listing: names, types, modes, owners, sizes,
// content hashes, xattrs), including the store's parent. An accepted one
// must give its exact tree for its top layer; `rmi` + `gc` then bring the
// store back to its listing before the case.
func TestReliabilityHostileImport(t *testing.T) {
	requireRoot(t)
	store := storeRoot(t)
	base := filepath.Dir(store) // the store's parent: holds only the store and the canary
	canary := filepath.Join(base, "canary")
	if err := os.MkdirAll(filepath.Join(canary, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "secret"), []byte("canary\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	canaryBefore, err := hostile.Listing(canary)
	if err != nil {
		t.Fatal(err)
	}
	in := t.TempDir() // the archives, away from the watched tree
	goodImage, err := hostile.GoodImage(in)
	if err != nil {
		t.Fatal(err)
	}
	mustStrata(t, "import", goodImage)
	snapshot := func() []string {
		t.Helper()
		l, err := hostile.Listing(base)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	cases := hostile.Cases()
	refused, accepted := 0, 0
	start := time.Now()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			p, err := c.Build(in, canary)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			defer os.RemoveAll(p)
			before := snapshot()
			args := append([]string{"--log-level", "warn", "import"}, c.Args...)
			r := strataIn(t, store, 2*time.Minute, append(args, p)...)
			if c.Refused() {
				if r.Code != 1 {
					t.Fatalf("exit %d, want 1 (refused: %v)\n%.2000s", r.Code, c.Err, r.Stderr)
				}
				lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
				t.Logf("refused: %.300s", lines[0])
				if len(lines) != 1 || !strings.HasPrefix(lines[0], "strata import: ") {
					t.Errorf("stderr has %d lines, want exactly one \"strata import: ...\":\n%.2000s", len(lines), r.Stderr)
				}
				if !strings.Contains(r.Stderr, c.Msg) || !strings.Contains(r.Stderr, c.Err.Error()) {
					t.Errorf("stderr does not name the problem (want %q and %q):\n%.2000s", c.Msg, c.Err, r.Stderr)
				}
				if r.Stdout != "" {
					t.Errorf("stdout of a refused import: %.500s", r.Stdout)
				}
				if after := snapshot(); !slices.Equal(before, after) {
					t.Fatalf("store, canary or the store's parent changed:\n%s", hostile.Diff(before, after, 30))
				}
				refused++
				return
			}
			if r.Code != 0 {
				t.Fatalf("refused, want accepted:\n%.2000s", r.Stderr)
			}
			// The subtest's own t would get its own store from mustStrata.
			must := func(args ...string) result {
				t.Helper()
				r := strataIn(t, store, time.Minute, args...)
				if r.Code != 0 {
					t.Fatalf("%v", r)
				}
				return r
			}
			info := parseInspect(t, must("inspect", c.Ref).Stdout)
			got, err := hostile.Listing(info.LayerDirs[len(info.LayerDirs)-1])
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.Tree) {
				t.Errorf("top layer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.Tree, "\n"))
			}
			if got, err := hostile.Listing(canary); err != nil || !slices.Equal(got, canaryBefore) {
				t.Fatalf("canary after an accepted import: %v\n%s", err, hostile.Diff(canaryBefore, got, 30))
			}
			if names := topNames(t, base); !slices.Equal(names, []string{"canary", "store"}) {
				t.Fatalf("the store's parent holds %v after an accepted import", names)
			}
			must("rmi", c.Ref)
			must("gc")
			if after := snapshot(); !slices.Equal(before, after) {
				t.Fatalf("store after rmi + gc is not what it was:\n%s", hostile.Diff(before, after, 30))
			}
			accepted++
		})
	}
	t.Logf("hostile corpus through the CLI: %d cases, %d refused, %d accepted, in %v", len(cases), refused, accepted, time.Since(start).Round(time.Millisecond))
}

func topNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
