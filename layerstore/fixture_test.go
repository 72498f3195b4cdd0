package layerstore

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const fixtureDir = "/tmp/fusefixture/busybox"

// TestBusyboxFixture imports the image that make-busybox-image.sh builds with
// real tools, from each of its forms: same image ID, identical layer trees;
// and as root, the layers stacked by the kernel's overlayfs equal umoci's
// reference rootfs. Skipped when the fixture is absent.
func TestBusyboxFixture(t *testing.T) {
	if _, err := os.Stat(filepath.Join(fixtureDir, "busybox-docker-archive.tar")); err != nil {
		t.Skip("fixture absent: run /work/shared/fixtures/make-busybox-image.sh")
	}
	if testing.Short() {
		t.Skip("short")
	}
	ref := newStore(t)
	start := time.Now()
	res := importOK(t, ref, filepath.Join(fixtureDir, "busybox-docker-archive.tar"), ImportOptions{})
	t.Logf("docker-archive: %d layers, %d bytes in %v", res.Extracted, res.Bytes, time.Since(start))
	img := res.Images[0]
	want := map[string][]string{}
	for _, l := range img.Layers {
		want[l.DiffID] = dumpTree(t, l.Dir)
	}
	for _, form := range []string{"busybox-oci", "busybox-oci-zstd", "busybox-oci-mislabeled", "busybox-oci-archive.tar"} {
		t.Run(form, func(t *testing.T) {
			p := filepath.Join(fixtureDir, form)
			if _, err := os.Stat(p); err != nil {
				t.Skip(err)
			}
			s := newStore(t)
			start := time.Now()
			r := importOK(t, s, p, ImportOptions{})
			t.Logf("%s: %v", form, time.Since(start))
			if len(r.Images) != 1 || r.Images[0].ID != img.ID {
				t.Fatalf("image ID %s, want %s", r.Images[0].ID, img.ID)
			}
			for _, l := range r.Images[0].Layers {
				if got := dumpTree(t, l.Dir); !slices.Equal(got, want[l.DiffID]) {
					t.Errorf("layer %s differs from the docker-archive import", l.DiffID)
				}
				if l.Digest == "" {
					t.Errorf("layer %s: no blob digest recorded", l.DiffID)
				}
			}
		})
	}
	t.Run("overlay mount equals reference", func(t *testing.T) {
		manifest := "/work/shared/fixtures/tree-manifest.py"
		refRoot := filepath.Join(fixtureDir, "busybox-reference", "rootfs")
		if !isRoot() {
			t.Skip("needs root to mount overlay")
		}
		for _, p := range []string{manifest, refRoot} {
			if _, err := os.Stat(p); err != nil {
				t.Skip(err)
			}
		}
		mnt := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		opts := "ro,lowerdir=" + strings.Join(ref.LowerDirs(img), ":")
		if out, err := exec.CommandContext(ctx, "mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
			t.Skipf("mount -t overlay: %v: %s", err, out)
		}
		defer exec.Command("umount", mnt).Run()
		got, err := exec.CommandContext(ctx, "python3", manifest, mnt, "--no-dir-mtime").Output()
		if err != nil {
			t.Fatal(err)
		}
		wantM, err := exec.CommandContext(ctx, "python3", manifest, refRoot, "--no-dir-mtime").Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(wantM) {
			gl, wl := strings.Split(string(got), "\n"), strings.Split(string(wantM), "\n")
			n := 0
			for _, l := range gl {
				if !slices.Contains(wl, l) && n < 20 {
					t.Errorf("mount has: %s", l)
					n++
				}
			}
			for _, l := range wl {
				if !slices.Contains(gl, l) && n < 40 {
					t.Errorf("reference has: %s", l)
					n++
				}
			}
		}
	})
}
