package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// requestLog collects the FUSE requests a debug-logging mount receives.
type requestLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *requestLog) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

var requestLine = regexp.MustCompile(`rx \d+: ([A-Z_]+) `)

// take returns the opcodes received since the last call.
func (r *requestLog) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []string
	for _, m := range requestLine.FindAllStringSubmatch(r.buf.String(), -1) {
		ops = append(ops, m[1])
	}
	r.buf.Reset()
	return ops
}

func count(ops []string, names ...string) int {
	n := 0
	for _, op := range ops {
		for _, name := range names {
			if op == name {
				n++
			}
		}
	}
	return n
}

// listAll lists dir with getdents calls of a small buffer, so that a big
// directory takes many READDIRPLUS requests at increasing offsets.
func listAll(t *testing.T, dir string) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 1024)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	sort.Strings(names)
	return names
}

// TestHandlelessDirs: directories are listed without OPENDIR/RELEASEDIR
// (the kernel opens them by itself), a warm listing sends no request at
// all, a big listing read in small pieces is whole and has no duplicate,
// and a change through the mount shows in the next listing.
func TestHandlelessDirs(t *testing.T) {
	var want []string
	fill := func(lowers []string) {
		for i := 0; i < 1500; i++ {
			l := lowers[i%2]
			name := fmt.Sprintf("file-%04d-%s", i, strings.Repeat("x", i%40))
			if err := os.MkdirAll(filepath.Join(l, "big"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(l, "big", name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			want = append(want, name)
		}
		// a name in both layers is listed once
		os.WriteFile(filepath.Join(lowers[0], "big", want[1]), []byte("top"), 0o644)
	}
	log := &requestLog{}
	logger := logrus.New()
	logger.SetOutput(log)
	logger.SetLevel(logrus.DebugLevel)
	mnt, _, _ := mountUnion(t, fill, 2, Config{Log: logger})
	sort.Strings(want)
	big := filepath.Join(mnt, "big")

	log.take()
	got := listAll(t, big)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("cold listing: %d names, want %d", len(got), len(want))
	}
	cold := log.take()
	if n := count(cold, "READDIRPLUS", "READDIR"); n < 2 {
		t.Errorf("cold listing of %d names took %d READDIR(PLUS) requests; want several (the test reads in small pieces)", len(want), n)
	}
	if n := count(cold, "OPENDIR", "RELEASEDIR"); n > 1 {
		t.Errorf("cold listing sent %d OPENDIR/RELEASEDIR; want at most the first OPENDIR (answered ENOSYS)", n)
	}

	for i := 0; i < 3; i++ {
		if got := listAll(t, big); len(got) != len(want) {
			t.Fatalf("warm listing %d: %d names, want %d", i, len(got), len(want))
		}
	}
	if warm := log.take(); count(warm, "OPENDIR", "RELEASEDIR", "READDIR", "READDIRPLUS") != 0 {
		t.Errorf("warm listings sent requests: %v", warm)
	}

	if err := os.WriteFile(filepath.Join(big, "zz-new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(big, want[0])); err != nil {
		t.Fatal(err)
	}
	got = listAll(t, big)
	want2 := append(append([]string{}, want[1:]...), "zz-new")
	sort.Strings(want2)
	if strings.Join(got, "\n") != strings.Join(want2, "\n") {
		t.Fatalf("listing after create and unlink: %d names, want %d", len(got), len(want2))
	}

	// fsync and fchmod of a directory fd, which carry no handle now
	fd, err := unix.Open(big, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
	if err := unix.Fchmod(fd, 0o710); err != nil {
		t.Errorf("fchmod of a directory: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&0o7777 != 0o710 {
		t.Errorf("after fchmod: mode %o, %v", st.Mode&0o7777, err)
	}
}
