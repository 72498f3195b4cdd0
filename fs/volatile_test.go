package fs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A volatile mount marks the upper, removes the mark when it ends cleanly,
// and a mark left behind (a crash) makes the next mount refuse the upper, as
// the kernel's overlayfs does.
func TestVolatileMarker(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	base := t.TempDir()
	lower, upper, work, mnt := filepath.Join(base, "l"), filepath.Join(base, "u"), filepath.Join(base, "w"), filepath.Join(base, "m")
	for _, d := range []string{lower, upper, work, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(work, volatileMarker)
	cfg := Config{Lowers: []string{lower}, Upper: upper, Work: work, Volatile: true}
	srv, err := Mount(mnt, cfg, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unmounted := false
	t.Cleanup(func() {
		if !unmounted {
			srv.Unmount()
		}
	})
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("volatile mount: no marker: %v", err)
	}
	// copy-up and fsync work, without syncing
	f, err := os.OpenFile(filepath.Join(mnt, "f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("more\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync on a volatile mount: %v", err)
	}
	f.Close()
	if b, _ := os.ReadFile(filepath.Join(upper, "f")); string(b) != "lower data\nmore\n" {
		t.Errorf("upper copy holds %q", b)
	}

	// A clean end removes the marker ...
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	unmounted = true
	waitDone := make(chan struct{})
	go func() { Wait(srv); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return after unmount")
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("marker still there after a clean end: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "work")); !os.IsNotExist(err) {
		t.Errorf("work/work left after a clean end: %v", err)
	}

	// ... and one left by a crash refuses the upper, volatile or not.
	if err := os.MkdirAll(marker, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, vol := range []bool{false, true} {
		cfg.Volatile = vol
		srv2, err := Mount(mnt, cfg, MountOptions{})
		if err == nil {
			srv2.Unmount()
			t.Fatalf("mount (volatile=%v) accepted an upper whose volatile marker was left behind", vol)
		}
		if !strings.Contains(err.Error(), "volatile") {
			t.Errorf("refusal does not say why: %v", err)
		}
	}
}
