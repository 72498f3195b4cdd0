package fs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Nothing a layer holds may make the daemon read or write outside its
// layers: symlinks in place of directories, symlinked parents, and
// redirect xattrs that climb out are all refused or shadowed.
func TestLayerSymlinksNeverFollowed(t *testing.T) {
	canary := t.TempDir()
	os.WriteFile(filepath.Join(canary, "secret"), []byte("outside"), 0o644)
	canaryBefore := hashTree(t, canary)
	var upperDir string
	mnt, upper, lowers := mountUnion(t, func(lowers []string) {
		// top lower: a -> canary symlink shadowed by an upper dir a
		os.Symlink(canary, filepath.Join(lowers[0], "a"))
		// middle: b -> canary over a lower dir b (bottom) with a file
		os.Symlink(canary, filepath.Join(lowers[1], "b"))
		os.MkdirAll(filepath.Join(lowers[2], "b"), 0o755)
		os.WriteFile(filepath.Join(lowers[2], "b", "inner"), []byte("in"), 0o644)
		// a directory whose redirect climbs out of the layers
		os.MkdirAll(filepath.Join(lowers[2], "r"), 0o755)
		// relative symlinks pointing up
		os.Symlink("../../../../../..", filepath.Join(lowers[2], "up"))
		os.Symlink("self", filepath.Join(lowers[2], "self"))
	}, 3, Config{})
	_ = upperDir
	lowerBefore := map[string]map[string]string{}
	for _, l := range lowers {
		lowerBefore[l] = hashTree(t, l)
	}
	// An upper directory "a" shadows the lower symlink a -> canary.
	os.MkdirAll(filepath.Join(upper, "a"), 0o755)
	os.WriteFile(filepath.Join(upper, "a", "mine"), []byte("upper"), 0o644)
	// A redirect that tries to leave the lower roots.
	os.MkdirAll(filepath.Join(upper, "r"), 0o755)
	unix.Setxattr(filepath.Join(upper, "r"), "trusted.overlay.redirect", []byte("/../../../../"+canary), 0)

	ents, err := os.ReadDir(filepath.Join(mnt, "a"))
	if err != nil {
		t.Fatalf("readdir a: %v", err)
	}
	for _, e := range ents {
		if e.Name() == "secret" {
			t.Errorf("lower symlink a was followed into the canary dir")
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "a", "secret")); err == nil {
		t.Errorf("a/secret visible")
	}
	if err := os.WriteFile(filepath.Join(mnt, "a", "new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(upper, "a", "new")); err != nil {
		t.Errorf("write under a did not land in the upper: %v", err)
	}
	// b is a symlink in the middle layer: the bottom dir b is hidden, and
	// the daemon shows the symlink itself.
	if l, err := os.Readlink(filepath.Join(mnt, "b")); err != nil || l != canary {
		t.Errorf("b: %q %v", l, err)
	}
	if ents, err := os.ReadDir(filepath.Join(mnt, "r")); err != nil {
		t.Errorf("readdir r: %v", err)
	} else {
		for _, e := range ents {
			if e.Name() == "secret" {
				t.Errorf("redirect escaped the lower roots")
			}
		}
	}
	os.Lstat(filepath.Join(mnt, "up"))
	os.Lstat(filepath.Join(mnt, "self"))
	// Changing metadata of the symlinks copies them up; never the target.
	os.Lchown(filepath.Join(mnt, "b"), 123, 456)
	unix.Lsetxattr(filepath.Join(mnt, "b"), "trusted.test", []byte("v"), 0)
	var st unix.Stat_t
	unix.Stat(filepath.Join(canary, "secret"), &st)
	if st.Uid == 123 {
		t.Errorf("lchown through a layer symlink reached the canary")
	}
	assertUnchanged(t, canaryBefore, canary)
	for _, l := range lowers {
		assertUnchanged(t, lowerBefore[l], l)
	}
}

// The daemon sees lower layers through read-only mounts of its own, so even
// a bug that opened a lower file for writing could not change it.
func TestLowerViewIsReadOnly(t *testing.T) {
	_, _, lowers := mountUnion(t, lowerStack, 1, Config{})
	u, err := newUnionFS(Config{Lowers: lowers})
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	fd, err := unix.Openat(u.lowers[0].root, "f", unix.O_WRONLY, 0)
	if err == nil {
		unix.Close(fd)
		t.Fatalf("lower file opened for writing through the daemon's view")
	}
	if err != unix.EROFS {
		t.Errorf("open for write: %v, want EROFS", err)
	}
}
