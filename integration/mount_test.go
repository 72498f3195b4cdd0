//go:build integration

package integration

import (
	"path/filepath"
	"testing"
)

// TestMountBusyboxMatchesReference mounts the imported busybox fixture with
// strata, read-only, and compares the whole tree with umoci's unpack of the
// same image (names, types, modes, owners, sizes, content hashes, xattrs,
// file mtimes, hard-link groups).
func TestMountBusyboxMatchesReference(t *testing.T) {
	requireCommands(t, "import", "mount", "umount")
	fx := fixture(t, "busybox")
	mustStrata(t, "import", filepath.Join(fx, "busybox-oci"), "--tag", "fixture/busybox:latest")
	mnt := filepath.Join(t.TempDir(), "mnt")
	mount(t, "fixture/busybox:latest", mnt, "--read-only")
	sameTree(t, "strata mount vs umoci unpack",
		treeManifest(t, filepath.Join(fx, "busybox-reference", "rootfs")), treeManifest(t, mnt))
	mustStrata(t, "umount", mnt)
	if isMounted(mnt) {
		t.Errorf("%s still mounted after strata umount", mnt)
	}
}

// TestMountSampleImage mounts the bundled sample image with strata and checks
// what its second layer did, as the demo shows it.
func TestMountSampleImage(t *testing.T) {
	requireCommands(t, "import", "mount", "umount")
	mustStrata(t, "import", filepath.Join(repoRoot, "testdata", "sample-image.tar"), "--tag", "sample:latest")
	mnt := filepath.Join(t.TempDir(), "mnt")
	mount(t, "sample:latest", mnt, "--read-only")
	checkSampleTree(t, mnt)
}
