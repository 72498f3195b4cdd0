package fsstress

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRunPlainDirectory: on a local file system the mix gives no errno
// outside the expected set, and does every kind of operation.
func TestRunPlainDirectory(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/b", "a/c", "e"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range []string{"a/x", "a/b/y", "a/c/z", "e/w"} {
		if err := os.WriteFile(filepath.Join(root, p), make([]byte, 1000*i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("x", filepath.Join(root, "a/lx")); err != nil {
		t.Fatal(err)
	}
	var total Stats
	for seed := int64(1); seed <= 3; seed++ {
		w, err := New(Config{Root: root, Dirs: []string{"a", "e"}, Scratch: "s/p" + string(rune('0'+seed)), Shared: "s/shared", Seed: seed, Ops: 3000})
		if err != nil {
			t.Fatal(err)
		}
		st := w.Run()
		if st.NUnexp > 0 {
			t.Errorf("seed %d: %d unexpected failures: %q", seed, st.NUnexp, st.Unexpected)
		}
		if n := st.Total(); n != 3000 {
			t.Errorf("seed %d: %d operations, want 3000", seed, n)
		}
		total.Ops = merge(total.Ops, st.Ops)
		total.Errnos = merge(total.Errnos, st.Errnos)
	}
	for _, o := range ops {
		if total.Ops[o.name] == 0 {
			t.Errorf("no %s in 9000 operations", o.name)
		}
	}
	t.Logf("errnos: %v", total.Errnos)
}

func merge(a, b map[string]int64) map[string]int64 {
	if a == nil {
		a = map[string]int64{}
	}
	for k, v := range b {
		a[k] += v
	}
	return a
}
