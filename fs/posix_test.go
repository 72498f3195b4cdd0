package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// mountUnion mounts a union of fresh directories (lowers prepared by fill)
// and unmounts it when the test ends.
func mountUnion(t *testing.T, fill func(lowers []string), nLowers int, cfg Config) (mnt string, upper string, lowers []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (whiteout devices, trusted xattrs)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	base := t.TempDir()
	for i := 0; i < nLowers; i++ {
		l := filepath.Join(base, "lower", string(rune('a'+i)))
		if err := os.MkdirAll(l, 0o755); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, l)
	}
	if fill != nil {
		fill(lowers)
	}
	upper = filepath.Join(base, "upper")
	work := filepath.Join(base, "work")
	mnt = filepath.Join(base, "mnt")
	for _, d := range []string{upper, work, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Lowers, cfg.Upper, cfg.Work = lowers, upper, work
	srv, err := Mount(mnt, cfg, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done := make(chan error, 1)
		go func() { done <- srv.Unmount() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("unmount: %v", err)
				// Never leave the mount behind (a busy mount after a
				// failed test): detach it.
				if derr := unix.Unmount(mnt, unix.MNT_DETACH); derr != nil {
					t.Errorf("lazy unmount: %v", derr)
				}
			}
		case <-time.After(20 * time.Second):
			t.Errorf("unmount timed out")
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt, upper, lowers
}

func TestPosixEmptyStack(t *testing.T) {
	for name, fn := range posixtest.All {
		t.Run(name, func(t *testing.T) {
			mnt, _, _ := mountUnion(t, nil, 1, Config{})
			fn(t, mnt)
		})
	}
}

// TestPosixInLowerDir runs the suite inside a directory that comes from a
// lower layer and held lower files (now whited out), so every create and
// rename happens in a merged directory.
func TestPosixInLowerDir(t *testing.T) {
	for name, fn := range posixtest.All {
		t.Run(name, func(t *testing.T) {
			mnt, _, _ := mountUnion(t, func(lowers []string) {
				d := filepath.Join(lowers[1], "dir")
				os.MkdirAll(d, 0o755)
				os.WriteFile(filepath.Join(d, "lowerfile"), []byte("lower"), 0o644)
				os.MkdirAll(filepath.Join(lowers[0], "dir", "sub"), 0o755)
			}, 2, Config{})
			// Whiting the lower entries out leaves a merged directory
			// that looks empty, as the suite expects.
			dir := filepath.Join(mnt, "dir")
			for _, n := range []string{"lowerfile", "sub"} {
				if err := os.Remove(filepath.Join(dir, n)); err != nil {
					t.Fatal(err)
				}
			}
			fn(t, dir)
		})
	}
}
