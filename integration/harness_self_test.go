//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHarnessKernelOverlay checks the harness itself, independent of strata:
// two hand-made layers in the overlay format (a 0/0 whiteout, an opaque dir)
// stacked with kernelOverlay and listed with treeManifest; the cleanup must
// leave no mount behind.
func TestHarnessKernelOverlay(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lower, upper := filepath.Join(base, "lower"), filepath.Join(base, "upper")
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(lower, "keep"), "keep\n")
	write(filepath.Join(lower, "gone"), "gone\n")
	write(filepath.Join(lower, "opq", "old"), "old\n")
	write(filepath.Join(upper, "opq", "new"), "new\n")
	write(filepath.Join(upper, "keep"), "changed\n")
	if err := unix.Mknod(filepath.Join(upper, "gone"), unix.S_IFCHR|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(upper, "opq"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(base, "mnt")
	t.Run("mount", func(t *testing.T) {
		kernelOverlay(t, []string{upper, lower}, "", "", mnt)
		if !isMounted(mnt) {
			t.Fatal("not mounted")
		}
		var names []string
		for _, l := range treeManifest(t, mnt) {
			names = append(names, strings.Fields(l)[0])
		}
		if got, want := strings.Join(names, " "), "keep opq opq/new"; got != want {
			t.Errorf("merged tree %q, want %q", got, want)
		}
		if b, _ := os.ReadFile(filepath.Join(mnt, "keep")); string(b) != "changed\n" {
			t.Errorf("keep = %q", b)
		}
	})
	if isMounted(mnt) {
		t.Errorf("cleanup left %s mounted", mnt)
	}
}

func TestHarnessDiffLines(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []string
		want string
	}{
		{"equal", []string{"x", "y"}, []string{"x", "y"}, ""},
		{"missing", []string{"x", "y"}, []string{"x"}, "- y"},
		{"extra", []string{"x"}, []string{"x", "z"}, "+ z"},
		{"duplicate", []string{"x"}, []string{"x", "x"}, "+ x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := diffLines(tc.a, tc.b, 10); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
