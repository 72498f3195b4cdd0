package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// TestSmallLowerFilesCached: a small lower file is read through the
// kernel's page cache, which it keeps across opens (a warm read sends OPEN
// and RELEASE only); a big one keeps passthrough where the kernel offers
// it; and a small file copied up by truncate(2) while an mmap'd reader holds
// it leaves that reader the whole lower data, as the kernel's overlayfs does.
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
	log := &requestLog{}
	logger := logrus.New()
	logger.SetOutput(log)
	logger.SetLevel(logrus.DebugLevel)
	mnt, _, _ := mountUnion(t, fill, 1, Config{Log: logger})

	read := func(name string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s: %d bytes, %v", name, len(got), err)
		}
	}
	read("small", small)
	if n := count(log.take(), "READ"); n == 0 {
		t.Fatalf("cold read of a small lower file sent no READ: was it passthrough?")
	}
	read("small", small) // the first read dropped the atime: one GETATTR
	log.take()
	read("small", small)
	if warm := log.take(); count(warm, "READ", "GETATTR") != 0 || count(warm, "OPEN") != 1 {
		t.Errorf("warm read of a small lower file sent %v; want OPEN and RELEASE only", warm)
	}

	read("big", big)
	read("big", big)
	passthrough := count(log.take(), "READ") == 0
	t.Logf("big file by passthrough: %v", passthrough)

	// An mmap'd reader of a cached file, then truncate(2) of its name:
	// the copy is cut, the reader keeps the lower data and its fd reads
	// it all.
	p := filepath.Join(mnt, "small2")
	rf, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	m, err := unix.Mmap(int(rf.Fd()), 0, len(small), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if err := mappedEqual(m, small); err != nil {
		t.Fatalf("the mmap'd reader: %v", err)
	}
	if err := unix.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	// The mapping first: a stat or read through the reader's fd would
	// fetch the attributes again and so mend a cut size.
	if err := mappedEqual(m, small); err != nil {
		t.Errorf("the mmap'd reader after the truncate of the copy: %v", err)
	}
	var rst unix.Stat_t
	if err := unix.Fstat(int(rf.Fd()), &rst); err != nil || rst.Size != int64(len(small)) {
		t.Errorf("fstat of the fd opened before the copy-up: size %d, %v; want the lower %d", rst.Size, err, len(small))
	}
	buf := make([]byte, len(small)+10)
	if k, err := unix.Pread(int(rf.Fd()), buf, 0); err != nil || !bytes.Equal(buf[:k], small) {
		t.Errorf("read through the fd opened before the copy-up: %d bytes, %v; want the lower %d", k, err, len(small))
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Size != 100 {
		t.Errorf("stat of the name after truncate: size %d, %v; want 100", st.Size, err)
	}
	read("small2", small[:100])
}

// mappedEqual compares a mapping with want, and reports a fault (SIGBUS past
// the file's end as the kernel sees it) as an error instead of dying with it,
// which would leave the test's mount behind.
func mappedEqual(m, want []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fault reading the mapping: %v", r)
		}
	}()
	if !bytes.Equal(m, want) {
		return errors.New("the mapped data changed")
	}
	return nil
}
