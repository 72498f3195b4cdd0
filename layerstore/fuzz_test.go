package layerstore

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// FuzzImport feeds arbitrary bytes to the importer as an archive file. It
// must never panic, never write outside the store, and a failed import must
// leave the store empty.
func FuzzImport(f *testing.F) {
	layer := mkTar(f, dir("d", 0o755), file("d/f", "hello", 0o644), symlink("d/l", "../x"), hardlink("d/h", "d/f"),
		file("d/.wh.gone", "", 0), file("d/.wh..wh..opq", "", 0))
	im := testImage{layers: [][]byte{layer}, tags: []string{"fuzz:1"}}
	f.Add(dockerArchive(f, false, im))
	f.Add(dockerArchive(f, true, testImage{layers: [][]byte{layer}, comp: []string{"gzip"}}))
	f.Add(legacyArchive(f, "fuzz:1", layer))
	d := f.TempDir()
	ociLayout(f, d, "", true, testImage{layers: [][]byte{layer}, comp: []string{"zstd"}, tags: []string{"1"}})
	f.Add(tarDir(f, d))
	f.Add(dockerArchive(f, false, testImage{layers: [][]byte{mkTar(f, symlink("a", "/"), file("a/x", "x", 0o644))}}))
	f.Add([]byte("not a tar"))
	durable = false // no fsync: the disk is not what is fuzzed
	f.Cleanup(func() { durable = true })
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		in := filepath.Join(base, "in.tar")
		if err := os.WriteFile(in, data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(filepath.Join(base, "store"))
		if err != nil {
			t.Fatal(err)
		}
		// A hang is a failure too: the fuzzer would otherwise just sit on
		// the input until -fuzztime ends and report nothing.
		done := make(chan error, 1)
		go func() {
			_, err := s.Import(context.Background(), in, ImportOptions{MaxRatio: 100, RatioFloor: 1 << 20, Parallel: 1})
			done <- err
		}()
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("import of %d bytes still running after 20 s:\n%s", len(data), buf[:runtime.Stack(buf, true)])
		}
		ents, _ := os.ReadDir(base)
		if len(ents) != 2 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("entries beside the store: %v", names)
		}
		if err != nil {
			for _, sub := range []string{"layers/sha256", "images", "tmp"} {
				if e, _ := os.ReadDir(filepath.Join(base, "store", sub)); len(e) != 0 {
					t.Fatalf("failed import (%v) left %s non-empty", err, sub)
				}
			}
		}
	})
}
