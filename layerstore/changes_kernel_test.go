package layerstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dumpOS lists a mounted tree through ordinary syscalls: one line per
// entry with type, mode, owner, size, content hash, symlink target, user
// xattrs and (for non-directories) mtime.
func dumpOS(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			line += fmt.Sprintf(" %d %s %d", st.Size, hex.EncodeToString(s[:6]), st.Mtim.Sec)
		case unix.S_IFLNK:
			tg, _ := os.Readlink(p)
			line += " -> " + tg
		}
		sz, _ := unix.Llistxattr(p, nil)
		if sz > 0 {
			buf := make([]byte, sz)
			sz, _ = unix.Llistxattr(p, buf)
			var xs []string
			for _, n := range bytes.Split(buf[:sz], []byte{0}) {
				if len(n) == 0 || !strings.HasPrefix(string(n), "user.") {
					continue
				}
				v := make([]byte, 256)
				k, _ := unix.Lgetxattr(p, string(n), v)
				xs = append(xs, string(n)+"="+string(v[:max(k, 0)]))
			}
			slices.Sort(xs)
			if len(xs) > 0 {
				line += " " + strings.Join(xs, ",")
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mountOverlay(t *testing.T, opts, mnt string) {
	t.Helper()
	os.MkdirAll(mnt, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -t overlay %s: %v: %s", opts, err, out)
	}
	t.Cleanup(func() { umountTest(mnt) })
}

func umountTest(mnt string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec.CommandContext(ctx, "umount", mnt).Run()
}

// TestWriteLayerKernelOverlay lets the kernel's overlayfs write an upper
// (with redirect_dir=on, so renamed lower directories become redirects),
// commits it, and checks that the lowers plus the committed layer, mounted
// by the kernel again, show exactly what the first mount showed.
func TestWriteLayerKernelOverlay(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root to mount overlay")
	}
	base := t.TempDir()
	l1 := newTestTree(t, filepath.Join(base, "l1"))
	l0 := newTestTree(t, filepath.Join(base, "l0"))
	l1.dir("etc", 0o755)
	l1.file("etc/passwd", "root:x:0:0\n")
	l1.file("etc/hostname", "box\n")
	l1.dir("data/tree/sub", 0o755)
	l1.file("data/tree/a", "a")
	l1.file("data/tree/sub/b", "b")
	l1.dir("data/gone/deep", 0o755)
	l1.file("data/gone/deep/x", "x")
	l1.dir("data/remade", 0o755)
	l1.file("data/remade/old", "old")
	l1.dir("data/chmod", 0o755)
	l0.dir("data/tree", 0o755)
	l0.file("data/tree/from-l0", "l0")
	l0.file("data/file", "file")
	upper, work, mnt := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
	os.Mkdir(upper, 0o755)
	os.Mkdir(work, 0o700)
	mountOverlay(t, fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s,redirect_dir=on,index=off,metacopy=off", l0.root, l1.root, upper, work), mnt)

	m := func(p string) string { return filepath.Join(mnt, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(m("etc/passwd"), []byte("root:x:0:0\nuser:x:1000:1000\n"), 0o644)) // modify
	must(os.Remove(m("etc/hostname")))                                                   // delete
	must(os.WriteFile(m("etc/motd"), []byte("hi\n"), 0o644))                             // add
	must(os.RemoveAll(m("data/gone")))                                                   // delete a tree
	must(os.RemoveAll(m("data/remade")))                                                 // delete and recreate: opaque
	must(os.Mkdir(m("data/remade"), 0o750))
	must(os.WriteFile(m("data/remade/new"), []byte("new"), 0o600))
	must(os.Rename(m("data/tree"), m("data/moved")))                         // a merged lower dir renamed: redirect
	must(os.WriteFile(m("data/moved/sub/b"), []byte("B!"), 0o644))           // changed inside the moved dir
	must(os.Rename(m("data/file"), m("data/file-renamed")))                  // a file renamed
	must(os.Chmod(m("data/chmod"), 0o700))                                   // metadata only
	must(os.Symlink("../etc/passwd", m("data/link")))                        // new symlink
	must(os.Link(m("etc/motd"), m("data/motd-hard")))                        // new hard link
	must(unix.Lsetxattr(m("etc/passwd"), "user.note", []byte("edited"), 0))  // xattr
	must(os.Lchown(m("data/remade/new"), 1000, 1000))                        // owner
	must(os.MkdirAll(m("data/moved/sub/newdir"), 0o755))                     // new dir inside moved
	must(os.Rename(m("data/moved/from-l0"), m("data/remade/from-l0-moved"))) // file out of moved dir
	want := dumpOS(t, mnt)
	umountTest(mnt)

	src := UpperLayers{Upper: upper, Work: work, Lowers: []string{l0.root, l1.root}}
	var redirects int
	filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if _, err := unix.Lgetxattr(p, "trusted.overlay.redirect", nil); err == nil {
				redirects++
			}
		}
		return nil
	})
	if redirects == 0 {
		t.Log("the kernel wrote no redirect (redirect_dir off?): the rename case is not exercised")
	}
	changes, err := Diff(src)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range changes {
		lines = append(lines, c.Kind.String()+" "+c.Path)
	}
	for _, w := range []string{"C /etc", "C /etc/passwd", "D /etc/hostname", "A /etc/motd", "D /data/gone",
		"C /data/remade", "D /data/remade/old", "A /data/remade/new", "D /data/tree", "A /data/moved", "A /data/moved/sub/b",
		"A /data/moved/a", "D /data/file", "A /data/file-renamed", "C /data/chmod", "A /data/link"} {
		if !slices.Contains(lines, w) {
			t.Errorf("diff lacks %q; diff:\n%s", w, strings.Join(lines, "\n"))
		}
	}
	var buf bytes.Buffer
	if _, err := WriteLayer(&buf, src); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(base, "committed")
	os.Mkdir(dest, 0o700)
	ls := &layerSource{name: "committed", diffID: digestOf(buf.Bytes()), size: -1, set: bytesSet(buf.Bytes())}
	if _, err := extractLayer(context.Background(), ls, dest, extractOptions{root0: true, warn: t.Logf}); err != nil {
		t.Fatal(err)
	}
	mnt2 := filepath.Join(base, "mnt2")
	mountOverlay(t, fmt.Sprintf("ro,lowerdir=%s:%s:%s", filepath.Join(dest, "diff"), l0.root, l1.root), mnt2)
	got := dumpOS(t, mnt2)
	if d := diffStrings(want, got); d != "" {
		t.Errorf("kernel overlay of lowers+committed layer differs from the original mount (- want + got):\n%s\nlayer:\n%s", d, strings.Join(tarList(t, buf.Bytes()), "\n"))
	}
}
