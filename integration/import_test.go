//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// inspected is what the import tests need from `strata inspect REF`.
type inspected struct {
	ID        string
	LayerDirs []string // bottom layer first, as in the image config's diff_ids
	DiffIDs   []string
	LowerDir  string // the layer dirs top-first, joined with ':' (mount -t overlay's lowerdir=)
	Raw       string
}

// inspect runs `strata inspect REF` and pulls out the image ID and the
// extracted directory of each layer.
func inspect(t testing.TB, ref string) inspected {
	t.Helper()
	r := mustStrata(t, "inspect", ref)
	return parseInspect(t, r.Stdout)
}

// parseInspect reads the JSON contract that the README documents and other
// tools rely on: "id", "layers" (bottom first) with "diff_id", "digest" and
// "dir" (absolute), and "lowerdir".
func parseInspect(t testing.TB, out string) inspected {
	t.Helper()
	var doc struct {
		ID     string `json:"id"`
		Layers []struct {
			DiffID string `json:"diff_id"`
			Digest string `json:"digest"`
			Dir    string `json:"dir"`
		} `json:"layers"`
		LowerDir string `json:"lowerdir"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("strata inspect: output is not the expected JSON object: %v\n%s", err, out)
	}
	in := inspected{ID: doc.ID, LowerDir: doc.LowerDir, Raw: out}
	if !strings.HasPrefix(in.ID, "sha256:") || len(in.ID) != len("sha256:")+64 {
		t.Fatalf("strata inspect: id %q is not sha256:<64 hex>:\n%s", in.ID, out)
	}
	if len(doc.Layers) == 0 {
		t.Fatalf("strata inspect: no layers in:\n%s", out)
	}
	for i, l := range doc.Layers {
		if !filepath.IsAbs(l.Dir) {
			t.Fatalf("strata inspect: layer %d: dir %q is not absolute:\n%s", i, l.Dir, out)
		}
		if fi, err := os.Stat(l.Dir); err != nil || !fi.IsDir() {
			t.Fatalf("strata inspect: layer %d: dir %s: %v", i, l.Dir, err)
		}
		if !strings.HasPrefix(l.DiffID, "sha256:") {
			t.Fatalf("strata inspect: layer %d: diff_id %q", i, l.DiffID)
		}
		in.LayerDirs = append(in.LayerDirs, l.Dir)
		in.DiffIDs = append(in.DiffIDs, l.DiffID)
	}
	if want := strings.Join(topFirst(in.LayerDirs), ":"); in.LowerDir != want {
		t.Errorf("strata inspect: lowerdir %q, want the layer dirs top-first %q", in.LowerDir, want)
	}
	return in
}

// topFirst reverses bottom-first layer dirs into lowerdir= order.
func topFirst(dirs []string) []string {
	out := make([]string, len(dirs))
	for i, d := range dirs {
		out[len(dirs)-1-i] = d
	}
	return out
}

// busyboxSources are the forms in which the shared fixture writes one image.
var busyboxSources = []struct {
	name, path string
}{
	{"docker-archive", "busybox-docker-archive.tar"},
	{"oci-gzip", "busybox-oci"},
	{"oci-uncompressed", "busybox-oci-uncompressed"},
	{"oci-zstd", "busybox-oci-zstd"},
	{"oci-mislabeled", "busybox-oci-mislabeled"},
	{"oci-archive", "busybox-oci-archive.tar"},
}

// TestImportBusyboxAllFormats imports the busybox fixture from every form
// real tools wrote it in, each into a fresh store: the image ID must be the
// same, every layer directory must hold the same tree, and the layers stacked
// with the kernel's overlayfs must show exactly umoci's unpack of the image.
func TestImportBusyboxAllFormats(t *testing.T) {
	requireCommands(t, "import", "inspect")
	fx := fixture(t, "busybox")
	reference := treeManifest(t, filepath.Join(fx, "busybox-reference", "rootfs"))

	var first *inspected
	var firstLayers [][]string
	for _, src := range busyboxSources {
		t.Run(src.name, func(t *testing.T) {
			mustStrata(t, "import", filepath.Join(fx, src.path), "--tag", "fixture/busybox:"+strings.ReplaceAll(src.name, "-", "_"))
			in := inspect(t, "fixture/busybox:"+strings.ReplaceAll(src.name, "-", "_"))
			if len(in.LayerDirs) != 4 {
				t.Fatalf("want 4 layers, got %d:\n%s", len(in.LayerDirs), in.Raw)
			}
			var layers [][]string
			for _, d := range in.LayerDirs {
				layers = append(layers, treeManifestFull(t, d)) // directory mtimes too
			}
			if first == nil {
				first, firstLayers = &in, layers
			} else {
				if in.ID != first.ID {
					t.Errorf("image ID %s, want %s (as from %s)", in.ID, first.ID, busyboxSources[0].name)
				}
				for i := range layers {
					sameTree(t, "layer "+strconv.Itoa(i+1)+" vs "+busyboxSources[0].name, firstLayers[i], layers[i])
				}
			}
			mnt := filepath.Join(t.TempDir(), "overlay")
			kernelOverlay(t, topFirst(in.LayerDirs), "", "", mnt)
			sameTree(t, "kernel overlay of the store's layers vs umoci unpack", reference, treeManifest(t, mnt))
		})
	}
}

// TestImportSharesLayers imports the same image from two forms into one
// store: one image, the same layer directories, and a second import of the
// same file extracts nothing (the layer directories are untouched).
func TestImportSharesLayers(t *testing.T) {
	requireCommands(t, "import", "inspect", "images")
	fx := fixture(t, "busybox")
	mustStrata(t, "import", filepath.Join(fx, "busybox-docker-archive.tar"), "--tag", "shared:a")
	a := inspect(t, "shared:a")
	before := make([]os.FileInfo, len(a.LayerDirs))
	for i, d := range a.LayerDirs {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = fi
	}
	mustStrata(t, "import", filepath.Join(fx, "busybox-oci-zstd"), "--tag", "shared:b")
	mustStrata(t, "import", filepath.Join(fx, "busybox-docker-archive.tar"), "--tag", "shared:a")
	b := inspect(t, "shared:b")
	if a.ID != b.ID {
		t.Fatalf("image IDs differ: %s vs %s", a.ID, b.ID)
	}
	for i := range a.LayerDirs {
		if a.LayerDirs[i] != b.LayerDirs[i] {
			t.Errorf("layer %d stored twice: %s and %s", i+1, a.LayerDirs[i], b.LayerDirs[i])
		}
		fi, err := os.Stat(a.LayerDirs[i])
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(before[i], fi) || !fi.ModTime().Equal(before[i].ModTime()) {
			t.Errorf("layer %d directory was replaced or modified by a re-import", i+1)
		}
	}
	r := mustStrata(t, "images", "--format", "json")
	if n := strings.Count(r.Stdout, shortID(a.ID)); n == 0 {
		t.Errorf("strata images --format json does not mention image %s:\n%s", a.ID, r.Stdout)
	}
}

// TestImportSampleImage imports the bundled sample image (testdata/) and
// checks through a kernel overlay of its layers what its second layer did.
func TestImportSampleImage(t *testing.T) {
	requireCommands(t, "import", "inspect")
	mustStrata(t, "import", filepath.Join(repoRoot, "testdata", "sample-image.tar"), "--tag", "sample:latest")
	in := inspect(t, "sample:latest")
	if len(in.LayerDirs) != 2 {
		t.Fatalf("want 2 layers, got %d", len(in.LayerDirs))
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	kernelOverlay(t, topFirst(in.LayerDirs), "", "", mnt)
	checkSampleTree(t, mnt)
}

// checkSampleTree asserts the merged view of testdata/sample-image.tar.
func checkSampleTree(t testing.TB, root string) {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%v", err)
		}
		return string(b)
	}
	if got := read("srv/demo/message.txt"); !strings.Contains(got, "layer 2") {
		t.Errorf("message.txt = %q, want the layer-2 version", got)
	}
	if got := read("srv/demo/keep.txt"); !strings.Contains(got, "layer 1") {
		t.Errorf("keep.txt = %q", got)
	}
	if got := read("srv/demo/added.txt"); got != "added by layer 2\n" {
		t.Errorf("added.txt = %q", got)
	}
	if got := read("srv/demo/cache/fresh.txt"); got == "" {
		t.Errorf("cache/fresh.txt missing")
	}
	for _, gone := range []string{"srv/demo/obsolete.txt", "srv/demo/cache/stale.txt", "srv/demo/.wh.obsolete.txt", "srv/demo/cache/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("%s: want ENOENT, got %v", gone, err)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "bin", "sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q, %v; want -> busybox", target, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: want sticky, got %v %v", fi, err)
	}
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// TestStoreLayersWithPeers hands the store's layer directories, unchanged, to
// the peers the design promises compatibility with: fuse-overlayfs, and
// strata's own fuse-overlayfs compatible `-o lowerdir=` form. Both must show
// exactly umoci's unpack of the image.
func TestStoreLayersWithPeers(t *testing.T) {
	requireCommands(t, "import", "inspect")
	fx := fixture(t, "busybox")
	reference := treeManifest(t, filepath.Join(fx, "busybox-reference", "rootfs"))
	mustStrata(t, "import", filepath.Join(fx, "busybox-docker-archive.tar"), "--tag", "fixture/busybox:latest")
	in := inspect(t, "fixture/busybox:latest")

	t.Run("fuse-overlayfs", func(t *testing.T) {
		mnt := filepath.Join(t.TempDir(), "mnt")
		fuseOverlayfs(t, topFirst(in.LayerDirs), "", "", mnt)
		sameTree(t, "fuse-overlayfs over the store's layers vs umoci unpack", reference, treeManifest(t, mnt))
	})
	t.Run("strata-o", func(t *testing.T) {
		mnt := filepath.Join(t.TempDir(), "mnt")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unmount(t, mnt) })
		if r := strataExec(t, defaultTimeout, "-o", "lowerdir="+in.LowerDir, mnt); r.Code != 0 {
			t.Fatalf("%v", r)
		}
		if !isMounted(mnt) {
			t.Fatalf("strata -o returned but %s is not mounted", mnt)
		}
		sameTree(t, "strata -o lowerdir= over the store's layers vs umoci unpack", reference, treeManifest(t, mnt))
	})
}
