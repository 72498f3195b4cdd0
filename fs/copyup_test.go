package fs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// hashTree records every entry of dir (type, mode, owner, size, content
// hash, link target) so a test can prove a lower layer never changed.
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		v := fmt.Sprintf("%o %d:%d %d %d.%09d", st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertUnchanged(t *testing.T, before map[string]string, dir string) {
	t.Helper()
	after := hashTree(t, dir)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("lower changed at %s: %q -> %q", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("lower gained %s", k)
		}
	}
}

var lowerContent = bytes.Repeat([]byte("lower data 0123456789\n"), 5000)

func lowerStack(lowers []string) {
	os.WriteFile(filepath.Join(lowers[0], "f"), lowerContent, 0o644)
	os.MkdirAll(filepath.Join(lowers[0], "d"), 0o755)
	os.WriteFile(filepath.Join(lowers[0], "d", "g"), lowerContent, 0o644)
	os.WriteFile(filepath.Join(lowers[0], "h1"), []byte("linked\n"), 0o644)
	os.Link(filepath.Join(lowers[0], "h1"), filepath.Join(lowers[0], "h2"))
	for i := 0; i < 50; i++ {
		os.WriteFile(filepath.Join(lowers[0], fmt.Sprintf("loop%d", i)), []byte("x"), 0o644)
	}
}

func TestCopyUpReaderThenWriter(t *testing.T) {
	mnt, upper, lowers := mountUnion(t, lowerStack, 1, Config{})
	before := hashTree(t, lowers[0])
	p := filepath.Join(mnt, "f")
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, 10)
	if _, err := r.Read(head); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open for write while a reader holds the lower file: %v", err)
	}
	if _, err := w.WriteAt([]byte("UPPER"), 0); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// The old reader keeps reading the lower file; a new one sees the copy.
	rest := make([]byte, 5)
	if _, err := r.ReadAt(rest, 0); err != nil || string(rest) != "lower" {
		t.Errorf("old reader sees %q, %v", rest, err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.HasPrefix(got, []byte("UPPER")) || len(got) != len(lowerContent) {
		t.Errorf("new reader sees %q... (%d bytes)", got[:10], len(got))
	}
	if b, _ := os.ReadFile(filepath.Join(upper, "f")); !bytes.HasPrefix(b, []byte("UPPER")) {
		t.Errorf("upper copy has %q", b[:10])
	}
	assertUnchanged(t, before, lowers[0])
}

func TestCopyUpKeepsInode(t *testing.T) {
	mnt, _, lowers := mountUnion(t, lowerStack, 1, Config{})
	before := hashTree(t, lowers[0])
	p := filepath.Join(mnt, "d", "g")
	var st1, st2 unix.Stat_t
	if err := unix.Stat(p, &st1); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p) // opened from the lower first
	_ = b
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("more\n"))
	var fst unix.Stat_t
	unix.Fstat(int(f.Fd()), &fst)
	f.Close()
	if err := unix.Stat(p, &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino || fst.Ino != st1.Ino {
		t.Errorf("st_ino changed across copy-up: %d -> %d (fstat %d)", st1.Ino, st2.Ino, fst.Ino)
	}
	if st2.Size != st1.Size+5 {
		t.Errorf("size %d, want %d", st2.Size, st1.Size+5)
	}
	assertUnchanged(t, before, lowers[0])
}

func TestCopyUpTightLoops(t *testing.T) {
	mnt, _, lowers := mountUnion(t, lowerStack, 1, Config{})
	before := hashTree(t, lowers[0])
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(2)
		p := filepath.Join(mnt, fmt.Sprintf("loop%d", i))
		go func() { // readers racing with the first write
			defer wg.Done()
			for j := 0; j < 20; j++ {
				os.ReadFile(p)
			}
		}()
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Errorf("open %s: %v", p, err)
					return
				}
				f.Write([]byte("y"))
				f.Close()
			}
		}(i)
	}
	wg.Wait()
	for i := 0; i < 50; i++ {
		b, _ := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("loop%d", i)))
		if string(b) != "x"+string(bytes.Repeat([]byte("y"), 20)) {
			t.Errorf("loop%d: %q", i, b)
		}
	}
	assertUnchanged(t, before, lowers[0])
}

func TestCopyUpTruncateOpenatMmap(t *testing.T) {
	mnt, _, lowers := mountUnion(t, lowerStack, 1, Config{})
	before := hashTree(t, lowers[0])
	// An mmap'd reader of the lower file (mmapreader_test.go).
	rd := startMappedReader(t, filepath.Join(mnt, "f"))
	if rd.first != sha(lowerContent) {
		t.Fatalf("mmap'd reader of the lower file read %s, want %s", rd.first, sha(lowerContent))
	}
	// truncate(2) on the path copies up and cuts.
	if err := unix.Truncate(filepath.Join(mnt, "f"), 100); err != nil {
		t.Fatal(err)
	}
	if mapped, _, _, err := rd.again(); err != nil || mapped != sha(lowerContent) {
		t.Errorf("mmap'd reader of the lower file after the truncate: %s, %v; want %s", mapped, err, sha(lowerContent))
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(mnt, "f"), &st)
	if st.Size != 100 {
		t.Errorf("size after truncate %d", st.Size)
	}
	// openat with a directory fd.
	dfd, err := unix.Open(filepath.Join(mnt, "d"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, "g", unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Pwrite(fd, []byte("DIRFD"), 0)
	unix.Close(fd)
	b, _ := os.ReadFile(filepath.Join(mnt, "d", "g"))
	if !bytes.HasPrefix(b, []byte("DIRFD")) {
		t.Errorf("openat write lost: %q", b[:8])
	}
	// shared writable mmap of a copied-up file
	wf, err := os.OpenFile(filepath.Join(mnt, "d", "g"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	wm, err := unix.Mmap(int(wf.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(wm, "MMAP!")
	unix.Msync(wm, unix.MS_SYNC)
	unix.Munmap(wm)
	wf.Close()
	b, _ = os.ReadFile(filepath.Join(mnt, "d", "g"))
	if !bytes.HasPrefix(b, []byte("MMAP!")) {
		t.Errorf("mmap write lost: %q", b[:8])
	}
	assertUnchanged(t, before, lowers[0])
}

func TestCopyUpHardLinksStayOneInode(t *testing.T) {
	mnt, _, lowers := mountUnion(t, lowerStack, 1, Config{})
	before := hashTree(t, lowers[0])
	p1, p2 := filepath.Join(mnt, "h1"), filepath.Join(mnt, "h2")
	var a, b unix.Stat_t
	unix.Stat(p1, &a)
	unix.Stat(p2, &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("lower hard links: ino %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	os.ReadFile(p2)
	if err := os.WriteFile(p1, []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p2)
	if err != nil || string(got) != "changed\n" {
		t.Errorf("other name of the hard link reads %q, %v", got, err)
	}
	f, err := os.OpenFile(p2, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("write through second name: %v", err)
	}
	f.Write([]byte("again\n"))
	f.Close()
	got, _ = os.ReadFile(p1)
	if string(got) != "changed\nagain\n" {
		t.Errorf("first name reads %q", got)
	}
	unix.Stat(p1, &a)
	unix.Stat(p2, &b)
	if a.Ino != b.Ino {
		t.Errorf("hard links split: %d vs %d", a.Ino, b.Ino)
	}
	assertUnchanged(t, before, lowers[0])
}

func TestUnlinkedOpenFileNlinkZero(t *testing.T) {
	mnt, _, _ := mountUnion(t, lowerStack, 1, Config{})
	f, err := os.Open(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(filepath.Join(mnt, "f")); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 0 {
		t.Errorf("fstat of an unlinked lower file: nlink %d", st.Nlink)
	}
	if _, err := os.Stat(filepath.Join(mnt, "f")); !os.IsNotExist(err) {
		t.Errorf("stat after unlink: %v", err)
	}
}

func TestInodeStableAcrossRemountAndForget(t *testing.T) {
	mnt, upper, lowers := mountUnion(t, lowerStack, 1, Config{})
	names := []string{"f", "d", "d/g", "h1", "h2", "loop1"}
	inos := map[string]uint64{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, n), &st); err != nil {
			t.Fatal(err)
		}
		inos[n] = st.Ino
	}
	// copy up a file, a dir (by chmod) and a hard link
	os.WriteFile(filepath.Join(mnt, "f"), []byte("new"), 0o644)
	os.Chmod(filepath.Join(mnt, "d"), 0o700)
	os.WriteFile(filepath.Join(mnt, "h2"), []byte("new"), 0o644)
	check := func(where, m string) {
		for _, n := range names {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(m, n), &st); err != nil {
				t.Fatalf("%s: lstat %s: %v", where, n, err)
			}
			if st.Ino != inos[n] {
				t.Errorf("%s: st_ino of %s changed %d -> %d", where, n, inos[n], st.Ino)
			}
		}
	}
	check("after copy-up", mnt)
	// Make the kernel forget everything it can.
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
	check("after forget", mnt)

	// A second mount of the same layers and upper.
	mnt2 := filepath.Join(t.TempDir(), "mnt2")
	os.Mkdir(mnt2, 0o755)
	work2 := filepath.Join(filepath.Dir(upper), "work2")
	os.Mkdir(work2, 0o755)
	srv, err := Mount(mnt2, Config{Lowers: lowers, Upper: upper, Work: work2}, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	check("after remount", mnt2)
}

func TestIndexedHardLinkNlink(t *testing.T) {
	mnt, _, _ := mountUnion(t, lowerStack, 1, Config{})
	p1, p2, p3 := filepath.Join(mnt, "h1"), filepath.Join(mnt, "h2"), filepath.Join(mnt, "h3")
	nlink := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Nlink
	}
	os.WriteFile(p1, []byte("x"), 0o644) // copy-up into the index
	if n := nlink(p2); n != 2 {
		t.Errorf("after copy-up nlink %d, want 2", n)
	}
	if err := os.Link(p2, p3); err != nil {
		t.Fatal(err)
	}
	if n := nlink(p1); n != 3 {
		t.Errorf("after link nlink %d, want 3", n)
	}
	if err := os.Remove(p1); err != nil {
		t.Fatal(err)
	}
	if n := nlink(p3); n != 2 {
		t.Errorf("after unlink nlink %d, want 2", n)
	}
	if b, _ := os.ReadFile(p2); string(b) != "x" {
		t.Errorf("h2 reads %q", b)
	}
}

// TestCopyDataSizes: copyData gives the copy the source's size whether the
// source ends in data or in a hole, and keeps the data.
func TestCopyDataSizes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name       string
		data, size int64
	}{{"full", 10000, 10000}, {"trailing-hole", 4096, 1 << 20}, {"empty", 0, 0}, {"only-hole", 0, 65536}} {
		src := filepath.Join(dir, tc.name+".src")
		want := bytes.Repeat([]byte{'s'}, int(tc.data))
		if err := os.WriteFile(src, want, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(src, tc.size); err != nil {
			t.Fatal(err)
		}
		sf, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, tc.name+".dst")
		df, err := os.Create(dst)
		if err != nil {
			t.Fatal(err)
		}
		err = copyData(int(sf.Fd()), int(df.Fd()), tc.size)
		sf.Close()
		df.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != tc.size || !bytes.Equal(got[:tc.data], want) || bytes.ContainsAny(got[tc.data:], "s") {
			t.Errorf("%s: copy has %d bytes, want %d with %d of data", tc.name, len(got), tc.size, tc.data)
		}
	}
}
