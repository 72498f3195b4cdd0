package fsx

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// files makes a few files in a plain directory, one with a hole.
func files(t *testing.T) ([]string, [][]byte) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	var init [][]byte
	for i, size := range []int{0, 1000, 300 << 10} {
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		b := make([]byte, size)
		for k := range b {
			b[k] = byte(k*7 + i)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths, init = append(paths, p), append(init, b)
	}
	p := filepath.Join(dir, "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1<<20)
	copy(b[512<<10:], "data in the middle")
	if _, err := f.WriteAt([]byte("data in the middle"), 512<<10); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return append(paths, p), append(init, b)
}

// TestRunPlainDirectory: on a local file system the exerciser finds no
// mismatch (its model is right).
func TestRunPlainDirectory(t *testing.T) {
	paths, init := files(t)
	res, err := Run(Config{Files: paths, Initial: init, Seed: 42, Ops: 3000, MaxSize: 2 << 20, FullCheckEvery: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 3000 {
		t.Errorf("ran %d operations, want 3000", res.Ops)
	}
	for _, k := range []string{"read", "write", "truncate", "mapread", "mapwrite", "punch"} {
		if res.ByOp[k] == 0 {
			t.Errorf("no %s operation in 3000", k)
		}
	}
}

// TestRunCatchesCorruption: a byte changed behind its back is reported with
// the seed, the step and the last operations.
func TestRunCatchesCorruption(t *testing.T) {
	paths, init := files(t)
	cfg := Config{Files: paths, Initial: init, Seed: 7, Ops: 2000, MaxSize: 2 << 20, FullCheckEvery: 50}
	cfg.corrupt = func(step int64, files []string) {
		if step != 300 {
			return
		}
		for _, p := range files {
			if st, err := os.Stat(p); err == nil && st.Size() > 10 {
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 1)
				f.ReadAt(b, 5)
				f.WriteAt([]byte{b[0] ^ 0xff}, 5)
				f.Close()
				return
			}
		}
		t.Fatal("no file to corrupt")
	}
	_, err := Run(cfg)
	var fe *Error
	if !errors.As(err, &fe) {
		t.Fatalf("corruption not caught: %v", err)
	}
	if fe.Step < 300 || fe.Step > 350 || len(fe.LastOps) == 0 || !strings.Contains(fe.Error(), "seed 7") {
		t.Errorf("caught at step %d with %d operations listed: %v", fe.Step, len(fe.LastOps), err)
	}
	t.Logf("as reported: %v", strings.SplitN(err.Error(), "\n", 2)[0])
}
