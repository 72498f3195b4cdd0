package fs

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRootfsFeatures(t *testing.T) {
	mnt, _, _ := mountUnion(t, lowerStack, 1, Config{})
	t.Run("flock and fcntl locks", func(t *testing.T) {
		p := filepath.Join(mnt, "f") // a lower file
		a, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := unix.Flock(int(a.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatalf("flock: %v", err)
		}
		if err := unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != unix.EWOULDBLOCK {
			t.Errorf("second flock: %v, want EWOULDBLOCK", err)
		}
		unix.Flock(int(a.Fd()), unix.LOCK_UN)
		w, err := os.OpenFile(filepath.Join(mnt, "locked"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 10}
		if err := unix.FcntlFlock(w.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatalf("fcntl lock: %v", err)
		}
		w2, _ := os.OpenFile(filepath.Join(mnt, "locked"), os.O_RDWR, 0)
		defer w2.Close()
		lk2 := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 10}
		if err := unix.FcntlFlock(w2.Fd(), unix.F_OFD_SETLK, &lk2); err == nil {
			t.Errorf("conflicting OFD lock granted")
		}
	})
	t.Run("sparse files and fallocate", func(t *testing.T) {
		p := filepath.Join(mnt, "sparse")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		if _, err := unix.Pwrite(fd, []byte("data"), 1<<20); err != nil {
			t.Fatal(err)
		}
		if off, err := unix.Seek(fd, 0, unix.SEEK_DATA); err != nil || off != 1<<20 {
			t.Errorf("SEEK_DATA: %d %v", off, err)
		}
		if off, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || off != 0 {
			t.Errorf("SEEK_HOLE: %d %v", off, err)
		}
		if err := unix.Fallocate(fd, 0, 0, 4096); err != nil {
			t.Errorf("fallocate: %v", err)
		}
		if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != nil {
			t.Errorf("punch hole: %v", err)
		}
		if err := f.Sync(); err != nil {
			t.Errorf("fsync: %v", err)
		}
	})
	t.Run("special files", func(t *testing.T) {
		if err := unix.Mkfifo(filepath.Join(mnt, "fifo"), 0o644); err != nil {
			t.Errorf("mkfifo: %v", err)
		}
		if err := unix.Mknod(filepath.Join(mnt, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Errorf("mknod: %v", err)
		}
		var st unix.Stat_t
		unix.Lstat(filepath.Join(mnt, "null"), &st)
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
			t.Errorf("device node: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		l, err := net.Listen("unix", filepath.Join(mnt, "sock"))
		if err != nil {
			t.Errorf("unix socket: %v", err)
		} else {
			l.Close()
		}
	})
	t.Run("name and path limits", func(t *testing.T) {
		long := strings.Repeat("n", 255)
		if err := os.WriteFile(filepath.Join(mnt, long), []byte("x"), 0o644); err != nil {
			t.Errorf("255-byte name: %v", err)
		}
		err := os.WriteFile(filepath.Join(mnt, long+"x"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("256-byte name: %v", err)
		}
		// a path close to PATH_MAX below the mount point, built with
		// relative steps so that the test itself stays under the limit
		dfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		comp := strings.Repeat("d", 200)
		depth := (unix.PathMax - len(mnt) - 300) / (len(comp) + 1)
		for i := 0; i < depth; i++ {
			if err := unix.Mkdirat(dfd, comp, 0o755); err != nil {
				t.Fatalf("mkdir at depth %d: %v", i, err)
			}
			nfd, err := unix.Openat(dfd, comp, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(dfd)
			dfd = nfd
		}
		defer unix.Close(dfd)
		fd, err := unix.Openat(dfd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err != nil {
			t.Fatalf("file at depth %d: %v", depth, err)
		}
		unix.Close(fd)
		full := mnt + strings.Repeat("/"+comp, depth) + "/leaf"
		if _, err := os.Stat(full); err != nil {
			t.Errorf("stat of a %d-byte path: %v", len(full), err)
		}
	})
}

func TestLayerXattr(t *testing.T) {
	mnt, _, _ := mountUnion(t, func(l []string) {
		os.WriteFile(filepath.Join(l[0], "top"), []byte("x"), 0o644)
		os.WriteFile(filepath.Join(l[1], "bottom"), []byte("x"), 0o644)
		os.MkdirAll(filepath.Join(l[1], "dir"), 0o755)
	}, 2, Config{LayerInfo: []string{"layer 2 sha256:aaa", "layer 1 sha256:bbb"}})
	get := func(p string) string {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(filepath.Join(mnt, p), LayerXattr, buf)
		if err != nil {
			t.Fatalf("getxattr %s: %v", p, err)
		}
		return string(buf[:n])
	}
	if v := get("top"); v != "layer 2 sha256:aaa" {
		t.Errorf("top: %q", v)
	}
	if v := get("bottom"); v != "layer 1 sha256:bbb" {
		t.Errorf("bottom: %q", v)
	}
	os.WriteFile(filepath.Join(mnt, "bottom"), []byte("y"), 0o644)
	if v := get("bottom"); !strings.HasPrefix(v, "upper") {
		t.Errorf("copied-up bottom: %q", v)
	}
	buf := make([]byte, 4096)
	n, _ := unix.Llistxattr(filepath.Join(mnt, "top"), buf)
	if strings.Contains(string(buf[:n]), LayerXattr) {
		t.Errorf("%s is listed", LayerXattr)
	}
}

func TestRawLayerShowsWhiteouts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	l := t.TempDir()
	unix.Mknod(filepath.Join(l, "gone"), unix.S_IFCHR, 0)
	os.WriteFile(filepath.Join(l, ".wh.old"), nil, 0o644)
	os.Mkdir(filepath.Join(l, "opq"), 0o755)
	unix.Setxattr(filepath.Join(l, "opq"), "trusted.overlay.opaque", []byte("y"), 0)
	mnt := t.TempDir()
	srv, err := Mount(mnt, Config{Lowers: []string{l}, Raw: true}, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	ents, _ := os.ReadDir(mnt)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != ".wh.old,gone,opq" {
		t.Errorf("raw listing %v", names)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("whiteout shown as %o %v", st.Mode, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(mnt, "opq"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr: %q %v", buf[:n], err)
	}
}

// AUFS/OCI-style markers in lower layers hide names and make directories
// opaque, as the overlay forms do.
func TestAUFSMarkersInLowers(t *testing.T) {
	mnt, _, _ := mountUnion(t, func(l []string) {
		// bottom (l[2]): a, d/x, o/old, keep
		os.WriteFile(filepath.Join(l[2], "a"), []byte("a"), 0o644)
		os.MkdirAll(filepath.Join(l[2], "d"), 0o755)
		os.WriteFile(filepath.Join(l[2], "d", "x"), []byte("x"), 0o644)
		os.MkdirAll(filepath.Join(l[2], "o"), 0o755)
		os.WriteFile(filepath.Join(l[2], "o", "old"), []byte("o"), 0o644)
		os.WriteFile(filepath.Join(l[2], "keep"), []byte("k"), 0o644)
		// middle (l[1]): markers
		os.WriteFile(filepath.Join(l[1], ".wh.a"), nil, 0o644)
		os.MkdirAll(filepath.Join(l[1], "d"), 0o755)
		os.WriteFile(filepath.Join(l[1], "d", ".wh.x"), nil, 0o644)
		os.MkdirAll(filepath.Join(l[1], "o"), 0o755)
		os.WriteFile(filepath.Join(l[1], "o", ".wh..wh..opq"), nil, 0o644)
		os.WriteFile(filepath.Join(l[1], "o", "new"), []byte("n"), 0o644)
		// top (l[0]): re-adds a
		os.WriteFile(filepath.Join(l[0], "a"), []byte("top"), 0o644)
	}, 3, Config{})
	if b, err := os.ReadFile(filepath.Join(mnt, "a")); err != nil || string(b) != "top" {
		t.Errorf("a: %q %v", b, err)
	}
	for _, p := range []string{"d/x", "o/old", ".wh.a", "d/.wh.x", "o/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(mnt, p)); !os.IsNotExist(err) {
			t.Errorf("%s visible: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(mnt, "keep")); err != nil {
		t.Errorf("keep: %v", err)
	}
	names := func(dir string) string {
		ents, _ := os.ReadDir(filepath.Join(mnt, dir))
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return strings.Join(n, ",")
	}
	if got := names("d"); got != "" {
		t.Errorf("d lists %q", got)
	}
	if got := names("o"); got != "new" {
		t.Errorf("o lists %q", got)
	}
	if got := names(""); got != "a,d,keep,o" {
		t.Errorf("root lists %q", got)
	}
}
