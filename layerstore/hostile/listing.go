package hostile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Listing describes every entry under root, one line each, in path order:
//
//	PATH TYPE PERM UID:GID [size=N sha256=HEX nlink=N] [-> TARGET] [MAJ,MIN] [XATTR="VALUE",...]
//
// Times are left out on purpose: it compares trees by what they hold, and a
// store directory's mtime changes whenever a staging directory comes and goes.
// Symlinks are never followed.
func Listing(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		line, err := describe(p, rel)
		if err != nil {
			return err
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", root, err)
	}
	return out, nil
}

func describe(p, rel string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "", err
	}
	typ := map[uint32]string{unix.S_IFREG: "f", unix.S_IFDIR: "d", unix.S_IFLNK: "l", unix.S_IFCHR: "c",
		unix.S_IFBLK: "b", unix.S_IFIFO: "p", unix.S_IFSOCK: "s"}[st.Mode&unix.S_IFMT]
	line := fmt.Sprintf("%s %s %04o %d:%d", rel, typ, st.Mode&0o7777, st.Uid, st.Gid)
	switch typ {
	case "f":
		h, err := hashFile(p)
		if err != nil {
			return "", err
		}
		line += fmt.Sprintf(" size=%d sha256=%s nlink=%d", st.Size, h, st.Nlink)
	case "l":
		t, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		line += " -> " + t
	case "c", "b":
		line += fmt.Sprintf(" %d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if xs := xattrs(p); len(xs) > 0 {
		line += " " + strings.Join(xs, ",")
	}
	return line, nil
}

func hashFile(p string) (string, error) {
	// O_NOFOLLOW: p was just lstat'ed as a regular file; never follow a
	// symlink swapped in meanwhile. O_NOATIME keeps a canary's atime.
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if err != nil {
		f, err = os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func xattrs(p string) []string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s=%q", name, v[:m]))
	}
	sort.Strings(out)
	return out
}

// Diff returns the lines only in a ("-") and only in b ("+"), at most max.
func Diff(a, b []string, max int) string {
	in := func(xs []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var out []string
	for _, x := range a {
		if !inb[x] {
			out = append(out, "- "+x)
		}
	}
	for _, x := range b {
		if !ina[x] {
			out = append(out, "+ "+x)
		}
	}
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("... %d more", len(out)-max))
	}
	return strings.Join(out, "\n")
}
