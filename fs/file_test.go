package fs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// TestSmallLowerFilesCached: a small lower file is read through the kernel's
// page cache, which its first open fills and which it keeps across opens (a
// read sends OPEN and RELEASE only); a big one uses passthrough where the
// kernel offers it; and a small file copied
// up by truncate(2) while an mmap'd reader holds it leaves that reader the
// whole lower data, as the kernel's overlayfs does.
func TestSmallLowerFilesCached(t *testing.T) {
	small := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	big := bytes.Repeat([]byte("big lower file. "), (smallLowerFile+64<<10)/16)
	fill := func(lowers []string) {
		for name, data := range map[string][]byte{"small": small, "small2": small, "big": big} {
			if err := os.WriteFile(filepath.Join(lowers[0], name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mnt, log := mountLogged(t, fill)

	read := func(name string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s: %d bytes, %v", name, len(got), err)
		}
	}
	read("big", big)
	read("big", big)
	if reads := count(log.take(), "READ"); reads != 0 && passthroughOffered() {
		t.Errorf("reads of a %d-byte lower file sent %d READs; want passthrough", len(big), reads)
	}

	// The first open stores the data in the kernel's cache: no READ, and
	// so no atime dropped and no GETATTR for the next fstat.
	read("small", small)
	if first := log.take(); count(first, "READ") != 0 {
		t.Errorf("the first read of a small lower file sent %v; want its data stored with the OPEN reply", first)
	}
	for i := 0; i < 2; i++ {
		read("small", small)
		if warm := log.take(); count(warm, "READ", "GETATTR") != 0 || count(warm, "OPEN") != 1 {
			t.Errorf("warm read of a small lower file sent %v; want OPEN and RELEASE only", warm)
		}
	}
	// Evicted pages are read again.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		t.Fatalf("drop_caches: %v", err)
	}
	read("small", small)
	if n := count(log.take(), "READ"); n == 0 {
		t.Errorf("a read after the page cache was dropped sent no READ")
	}

	// An mmap'd reader of a cached file, then truncate(2) of its name:
	// the copy is cut, the reader keeps the lower data and its fd reads
	// it all.
	p := filepath.Join(mnt, "small2")
	read("small2", small)         // its next open is cached
	rd := startMappedReader(t, p) // mmapreader_test.go
	if rd.first != sha(small) {
		t.Fatalf("the mmap'd reader read %s, want %s", rd.first, sha(small))
	}
	if err := unix.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	mapped, size, readSum, err := rd.again()
	switch {
	case err != nil:
		t.Errorf("the mmap'd reader after the truncate of the copy: %v", err)
	case mapped != sha(small):
		t.Errorf("the mmap'd reader's data changed with the truncate of the copy")
	case size != int64(len(small)):
		t.Errorf("fstat of the fd opened before the copy-up: size %d; want the lower %d", size, len(small))
	case readSum != sha(small):
		t.Errorf("read through the fd opened before the copy-up: %s; want the lower %s", readSum, sha(small))
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Size != 100 {
		t.Errorf("stat of the name after truncate: size %d, %v; want 100", st.Size, err)
	}
	read("small2", small[:100])
}

// passthroughOffered reports whether the kernel offers FUSE passthrough to
// this process: 6.9 or later, and root (CAP_SYS_ADMIN).
func passthroughOffered() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil || os.Geteuid() != 0 {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 6 || major == 6 && minor >= 9
}

// A read-only open of a small lower file whose data the kernel holds opens
// no layer fd (storedFile); once the pages are evicted it reads the lower
// file by its path below the layer, whatever became of its name meanwhile.
func TestStoredHandlesAfterEviction(t *testing.T) {
	data := func(name string) []byte { return bytes.Repeat([]byte(name+" lower data. "), 700) }
	fill := func(lowers []string) {
		for _, name := range []string{"d/unlinked", "d/copied", "r/renamed"} {
			p := filepath.Join(lowers[0], name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data(filepath.Base(name)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mnt, log := mountLogged(t, fill)
	// A directory renamed in the mount: its lower files stay where they were.
	if err := os.Rename(filepath.Join(mnt, "r"), filepath.Join(mnt, "moved")); err != nil {
		t.Fatal(err)
	}
	open := func(name string) *os.File {
		t.Helper()
		p := filepath.Join(mnt, name)
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, data(filepath.Base(name))) { // stores the pages
			t.Fatalf("first read of %s: %d bytes, %v", name, len(b), err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	unlinked, copied, renamed := open("d/unlinked"), open("d/copied"), open("moved/renamed")

	if err := os.Remove(filepath.Join(mnt, "d/unlinked")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "d/copied"), []byte("new upper data"), 0o644); err != nil {
		t.Fatal(err)
	}
	log.take()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		t.Fatalf("drop_caches: %v", err)
	}
	for _, c := range []struct {
		f    *os.File
		name string
	}{{unlinked, "unlinked"}, {copied, "copied"}, {renamed, "renamed"}} {
		got := make([]byte, len(data(c.name))+10)
		n, err := c.f.ReadAt(got, 0)
		if err != nil && err != io.EOF || !bytes.Equal(got[:n], data(c.name)) {
			t.Errorf("read of %q opened before it was changed, after the page cache was dropped: %d bytes, %v; want its lower data", c.name, n, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(c.f.Fd()), &st); err != nil || st.Size != int64(len(data(c.name))) {
			t.Errorf("fstat of %q: size %d, %v; want %d", c.name, st.Size, err, len(data(c.name)))
		}
	}
	if n := count(log.take(), "READ"); n == 0 {
		t.Errorf("reads after the page cache was dropped sent no READ: the test checked nothing")
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "d/copied")); err != nil || string(b) != "new upper data" {
		t.Errorf("the copied-up name reads %q, %v", b, err)
	}
}

// mountLogged mounts one filled lower and an upper, and logs the requests
// the mount serves.
func mountLogged(t *testing.T, fill func(lowers []string)) (string, *requestLog) {
	log := &requestLog{}
	logger := logrus.New()
	logger.SetOutput(log)
	logger.SetLevel(logrus.DebugLevel)
	mnt, _, _ := mountUnion(t, fill, 1, Config{Log: logger})
	return mnt, log
}
