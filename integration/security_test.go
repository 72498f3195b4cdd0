//go:build integration

package integration

// Issue 6, "hostile input through the mount": what a mounted image can make
// the daemon do, what a plain user may do on a root-owned mount, and the
// nosuid/nodev/ro choices of both invocations.
//
// The line between the caller and the daemon. Symlinks in a FUSE mount are
// followed by the kernel's VFS in the context of the process that names
// them: `cat mnt/link/passwd` with link -> /etc reads the host's /etc/passwd
// as the caller, exactly as it would through the kernel's overlayfs or any
// directory. That is not an escape, and the daemon never sees "passwd". An
// escape is the daemon itself (its PID) reading or writing anything outside
// its layers, upper and work directories, whatever requests it is sent. So:
//
//   - every operation is sent twice: once naming the symlinks themselves
//     from the host (no component following them: lstat, readlink, lchown,
//     lsetxattr, link, rename, unlink, O_NOFOLLOW opens, ...), and once
//     through names below them resolved as a container sees them (openat2
//     RESOLVE_IN_ROOT at the mount root, as a chroot into the image would:
//     /etc is the image's /etc, ../../.. stops at the image's root), which
//     sends the daemon lookups, creates, copy-ups and renames of what the
//     links lead to inside the image;
//   - the canary directory (the symlinks' host targets) sits beside the
//     layer store on a tmpfs of the test's own, mounted strictatime; a
//     fanotify group (FAN_REPORT_DFID_NAME, a filesystem mark) sees every
//     open, access, modify, close, attribute change, create, delete and move
//     on it, with the PID that did it; a second filesystem mark covers the
//     filesystem of the real /etc. Any event on the canary before the
//     positive control, and any event by the daemon's PID outside its own
//     directories, fails the test; so does any change in the canary's
//     contents, owners, modes, xattrs, mtimes, ctimes or atimes;
//   - positive controls show the watch works: the daemon's own accesses to
//     its layers are seen under its PID, and a host-side `cat` through a
//     link into the canary is seen under the cat's PID and not the daemon's;
//   - every operation runs on the kernel's overlayfs over the same layer
//     directories too, and the results (errno or output), the merged trees
//     and the upper directories must agree.
//
// TestReliabilityMountEscape does that over `strata mount` of an imported
// image; TestReliabilityNonRootUser drives a root-owned mount as nobody;
// TestReliabilityNosuidNodev checks mount flags and their effect for
// `strata mount` and for `strata -o` against fuse-overlayfs.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------------------
// Operations, run in this process or in a helper process (as another user)

// secHelperEnv makes the test binary a helper: it reads a secScript on
// stdin, runs it and prints the results as JSON. Tests run it with other
// credentials (nobody) through exec.Cmd's SysProcAttr.
const secHelperEnv = "STRATA_SECURITY_HELPER"

func init() {
	if os.Getenv(secHelperEnv) == "" {
		return
	}
	var s secScript
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil {
		fmt.Fprintln(os.Stderr, "security helper:", err)
		os.Exit(2)
	}
	res, err := s.run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "security helper:", err)
		os.Exit(2)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// secOp is one operation on a path relative to the mount root.
type secOp struct {
	Op  string `json:"op"`
	P   string `json:"p,omitempty"`
	Q   string `json:"q,omitempty"` // second path (link, rename) or xattr name
	V   string `json:"v,omitempty"` // data, symlink target or xattr value
	M   uint32 `json:"m,omitempty"` // mode
	N   int64  `json:"n,omitempty"` // size, uid
	G   int    `json:"g,omitempty"` // gid
	Tag string `json:"tag,omitempty"`
}

func (o secOp) String() string {
	s := o.Op + " " + o.P
	if o.Q != "" {
		s += " " + o.Q
	}
	if o.V != "" {
		s += " " + strconv.Quote(o.V)
	}
	if o.M != 0 {
		s += fmt.Sprintf(" %04o", o.M)
	}
	if o.Op == "chown" || o.Op == "lchown" {
		s += fmt.Sprintf(" %d:%d", o.N, o.G)
	}
	return s
}

// secScript is a list of operations on the mount at Root; InRoot resolves
// every path as if Root were "/" (RESOLVE_IN_ROOT), Host as the process sees
// it.
type secScript struct {
	Root   string  `json:"root"`
	InRoot bool    `json:"in_root"`
	Ops    []secOp `json:"ops"`
}

func (s secScript) run() ([]string, error) {
	c, err := newSecCtx(s.Root, s.InRoot)
	if err != nil {
		return nil, err
	}
	defer c.close()
	out := make([]string, len(s.Ops))
	for i, o := range s.Ops {
		out[i] = c.do(o)
	}
	return out, nil
}

type secCtx struct {
	root    string
	rootfd  int
	resolve uint64
}

func newSecCtx(root string, inRoot bool) (*secCtx, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", root, err)
	}
	c := &secCtx{root: root, rootfd: fd}
	if inRoot {
		c.resolve = unix.RESOLVE_IN_ROOT
	}
	return c, nil
}

func (c *secCtx) close() {
	if c.rootfd >= 0 {
		unix.Close(c.rootfd)
		c.rootfd = -1
	}
}

func (c *secCtx) open(p string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: c.resolve}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(mode)
	}
	for {
		fd, err := unix.Openat2(c.rootfd, p, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// parent opens the directory holding p's last component (O_PATH) and
// returns it with that component, which the *at calls do not follow.
func (c *secCtx) parent(p string) (int, string, error) {
	dir, base := path.Split(p)
	if dir == "" {
		dir = "."
	}
	fd, err := c.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, base, err
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// secTime is the time the utimes operations set.
var secTime = []unix.Timespec{{Sec: 1012608000, Nsec: 5}, {Sec: 1012608000, Nsec: 7}}

// do runs one operation: "ok", "ok OUTPUT" or the errno's name.
func (c *secCtx) do(o secOp) string {
	out, err := c.do1(o)
	if err != nil {
		var e syscall.Errno
		if errors.As(err, &e) {
			return errnoName(e)
		}
		return "error " + err.Error()
	}
	if out != "" {
		return "ok " + out
	}
	return "ok"
}

func secStatLine(s *unix.Stat_t) string {
	typ := typeLetter(s.Mode)
	line := fmt.Sprintf("%s %04o %d:%d", typ, s.Mode&0o7777, s.Uid, s.Gid)
	switch typ {
	case "f", "l":
		line += fmt.Sprintf(" s=%d", s.Size)
	case "c", "b":
		line += fmt.Sprintf(" rdev=%d,%d", unix.Major(s.Rdev), unix.Minor(s.Rdev))
	}
	return line
}

func (c *secCtx) withPath(p string, f func(string) error) error {
	fd, err := c.open(p, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return f(fdPath(fd))
}

func (c *secCtx) withParent(p string, f func(int, string) error) error {
	fd, base, err := c.parent(p)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return f(fd, base)
}

func (c *secCtx) withParents(p, q string, f func(int, string, int, string) error) error {
	return c.withParent(p, func(pfd int, pb string) error {
		return c.withParent(q, func(qfd int, qb string) error { return f(pfd, pb, qfd, qb) })
	})
}

func (c *secCtx) writeOpen(p string, flags int, mode uint32, data string) error {
	fd, err := c.open(p, flags|unix.O_NONBLOCK, mode)
	if err != nil {
		return err
	}
	werr := writeAll(fd, []byte(data), -1)
	if cerr := unix.Close(fd); werr == nil {
		werr = cerr
	}
	return werr
}

func (c *secCtx) do1(o secOp) (string, error) {
	var out string
	var err error
	switch o.Op {
	case "lstat":
		err = c.withParent(o.P, func(fd int, b string) error {
			var s unix.Stat_t
			if err := unix.Fstatat(fd, b, &s, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
			out = secStatLine(&s)
			return nil
		})
	case "stat":
		err = c.withPath(o.P, func(p string) error {
			var s unix.Stat_t
			if err := unix.Stat(p, &s); err != nil {
				return err
			}
			out = secStatLine(&s)
			return nil
		})
	case "read":
		var fd int
		if fd, err = c.open(o.P, unix.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			out, err = readFd(fd) // quoted, long contents summarised
			unix.Close(fd)
		}
	case "readdir":
		var fd int
		if fd, err = c.open(o.P, unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
			f := os.NewFile(uintptr(fd), o.P)
			var names []string
			names, err = f.Readdirnames(-1)
			f.Close()
			sort.Strings(names)
			out = strings.Join(names, ",")
			if err != nil {
				err = errnoOf(errors.Unwrap(err))
			}
		}
	case "readlink":
		err = c.withParent(o.P, func(fd int, b string) error {
			buf := make([]byte, 4096)
			n, err := unix.Readlinkat(fd, b, buf)
			out = strconv.Quote(string(buf[:max(n, 0)]))
			return err
		})
	case "create": // O_CREAT|O_EXCL
		err = c.writeOpen(o.P, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, o.M, o.V)
	case "trunc": // O_CREAT|O_TRUNC
		err = c.writeOpen(o.P, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY, o.M, o.V)
	case "append":
		err = c.writeOpen(o.P, unix.O_WRONLY|unix.O_APPEND, 0, o.V)
	case "openw":
		err = c.writeOpen(o.P, unix.O_WRONLY, 0, "")
	case "openrw": // a device: open for reading and writing, write a byte
		err = c.writeOpen(o.P, unix.O_RDWR, 0, "x")
	case "openro":
		var fd int
		if fd, err = c.open(o.P, unix.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			unix.Close(fd)
		}
	case "openro-nofollow":
		var fd int
		if fd, err = c.open(o.P, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0); err == nil {
			unix.Close(fd)
		}
	case "opath-nofollow":
		var fd int
		if fd, err = c.open(o.P, unix.O_PATH|unix.O_NOFOLLOW, 0); err == nil {
			var s unix.Stat_t
			err = unix.Fstatat(fd, "", &s, unix.AT_EMPTY_PATH)
			out = typeLetter(s.Mode)
			unix.Close(fd)
		}
	case "mkdir":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Mkdirat(fd, b, o.M) })
	case "rmdir":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Unlinkat(fd, b, unix.AT_REMOVEDIR) })
	case "unlink":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Unlinkat(fd, b, 0) })
	case "mkfifo":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Mknodat(fd, b, unix.S_IFIFO|o.M, 0) })
	case "mknod": // the character device 1:3 (/dev/null)
		err = c.withParent(o.P, func(fd int, b string) error {
			return unix.Mknodat(fd, b, unix.S_IFCHR|o.M, int(unix.Mkdev(1, 3)))
		})
	case "symlink":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Symlinkat(o.V, fd, b) })
	case "link":
		err = c.withParents(o.P, o.Q, func(pf int, pb string, qf int, qb string) error { return unix.Linkat(pf, pb, qf, qb, 0) })
	case "rename":
		err = c.withParents(o.P, o.Q, func(pf int, pb string, qf int, qb string) error { return unix.Renameat(pf, pb, qf, qb) })
	case "chmod":
		err = c.withPath(o.P, func(p string) error { return unix.Chmod(p, o.M) })
	case "lchmod":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Fchmodat(fd, b, o.M, unix.AT_SYMLINK_NOFOLLOW) })
	case "chown":
		err = c.withPath(o.P, func(p string) error { return unix.Chown(p, int(o.N), o.G) })
	case "lchown":
		err = c.withParent(o.P, func(fd int, b string) error {
			return unix.Fchownat(fd, b, int(o.N), o.G, unix.AT_SYMLINK_NOFOLLOW)
		})
	case "utimes":
		err = c.withPath(o.P, func(p string) error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, secTime, 0) })
	case "lutimes":
		err = c.withParent(o.P, func(fd int, b string) error {
			return unix.UtimesNanoAt(fd, b, secTime, unix.AT_SYMLINK_NOFOLLOW)
		})
	case "touch": // both times to now: needs write permission, not ownership
		now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		err = c.withPath(o.P, func(p string) error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, now, 0) })
	case "truncate":
		err = c.withPath(o.P, func(p string) error { return unix.Truncate(p, o.N) })
	case "setxattr":
		err = c.withPath(o.P, func(p string) error { return unix.Setxattr(p, o.Q, []byte(o.V), 0) })
	case "lsetxattr":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Lsetxattr(fdPath(fd)+"/"+b, o.Q, []byte(o.V), 0) })
	case "getxattr", "lgetxattr":
		get := func(p string) error {
			v, err := getxattrNoFollow(p, o.Q, o.Op == "lgetxattr")
			out = strconv.Quote(string(v))
			return err
		}
		if o.Op == "getxattr" {
			err = c.withPath(o.P, get)
		} else {
			err = c.withParent(o.P, func(fd int, b string) error { return get(fdPath(fd) + "/" + b) })
		}
	case "removexattr":
		err = c.withPath(o.P, func(p string) error { return unix.Removexattr(p, o.Q) })
	case "lremovexattr":
		err = c.withParent(o.P, func(fd int, b string) error { return unix.Lremovexattr(fdPath(fd)+"/"+b, o.Q) })
	case "listxattr", "llistxattr":
		list := func(p string) error {
			buf := make([]byte, 64<<10)
			var n int
			var err error
			if o.Op == "listxattr" {
				n, err = unix.Listxattr(p, buf)
			} else {
				n, err = unix.Llistxattr(p, buf)
			}
			if err != nil {
				return err
			}
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			sort.Strings(names)
			out = strings.Join(names, ",")
			return nil
		}
		if o.Op == "listxattr" {
			err = c.withPath(o.P, list)
		} else {
			err = c.withParent(o.P, func(fd int, b string) error { return list(fdPath(fd) + "/" + b) })
		}
	case "exec": // run the program: its exit status (the test programs exit with their euid)
		if c.resolve != 0 {
			return "", fmt.Errorf("exec is a host-side operation")
		}
		cmd := exec.Command(filepath.Join(c.root, o.P))
		err = cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			out = "exit 0"
		case errors.As(err, &ee):
			out, err = fmt.Sprintf("exit %d", ee.ExitCode()), nil
		default:
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
		}
	default:
		return "", fmt.Errorf("unknown operation %q", o.Op)
	}
	return out, err
}

func getxattrNoFollow(p, name string, nofollow bool) ([]byte, error) {
	buf := make([]byte, 64<<10)
	var n int
	var err error
	if nofollow {
		n, err = unix.Lgetxattr(p, name, buf)
	} else {
		n, err = unix.Getxattr(p, name, buf)
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// nobodyHelper copies the test binary (go test keeps it in a 0700
// directory) into dir, where nobody can run it.
func nobodyHelper(t testing.TB, dir string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "helper")
	copyFile(t, exe, p, 0o755)
	return p
}

// publicTempDir is a directory under /tmp that nobody can traverse (a
// t.TempDir is 0700), removed at cleanup; register it before the mounts in it.
func publicTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "strata-sec-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	t.Cleanup(func() {
		if ms := mountsUnder(d); len(ms) > 0 {
			t.Errorf("mounts left under %s: %v", d, ms)
			return
		}
		os.RemoveAll(d)
	})
	return d
}

// runAsNobody runs script in a helper process with uid/gid 65534 and no
// supplementary groups (no capabilities: a set-user-ID change from root to
// another user clears them).
func runAsNobody(t testing.TB, exe string, script secScript) []string {
	t.Helper()
	in, _ := json.Marshal(script)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), secHelperEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	cmd.WaitDelay = 5 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the helper as nobody: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("helper as nobody: timed out\n%s", stderr.String())
	}
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, stderr.String())
	}
	var res []string
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res) != len(script.Ops) {
		t.Fatalf("helper as nobody: bad output (%v): %s\n%s", err, stdout.String(), stderr.String())
	}
	return res
}

// ---------------------------------------------------------------------------
// Images built for these tests

// secEntry is one tar entry of a layer.
type secEntry struct {
	name     string
	typ      byte // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar
	mode     int64
	uid, gid int
	body     string // content or link target
	major    int64
	minor    int64
}

func secDir(name string, mode int64, uid, gid int) secEntry {
	return secEntry{name: name, typ: tar.TypeDir, mode: mode, uid: uid, gid: gid}
}

func secFile(name string, mode int64, uid, gid int, body string) secEntry {
	return secEntry{name: name, typ: tar.TypeReg, mode: mode, uid: uid, gid: gid, body: body}
}

func secLink(name, target string) secEntry {
	return secEntry{name: name, typ: tar.TypeSymlink, mode: 0o777, body: target}
}

// secArchive writes a docker-archive with one layer per element of layers
// (bottom first), tagged tag, and returns its path.
func secArchive(t testing.TB, dir, tag string, layers ...[]secEntry) string {
	t.Helper()
	mtime := time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)
	var blobs [][]byte
	for _, l := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range l {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
			switch e.typ {
			case tar.TypeReg:
				h.Size = int64(len(e.body))
			case tar.TypeSymlink, tar.TypeLink:
				h.Linkname = e.body
			case tar.TypeChar, tar.TypeBlock:
				h.Devmajor, h.Devminor = e.major, e.minor
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatalf("tar header %s: %v", e.name, err)
			}
			if e.typ == tar.TypeReg {
				tw.Write([]byte(e.body))
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, buf.Bytes())
	}
	hexOf := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	var diffIDs, names []string
	var history []map[string]string
	for i, b := range blobs {
		diffIDs = append(diffIDs, "sha256:"+hexOf(b))
		names = append(names, hexOf(b)+"/layer.tar")
		history = append(history, map[string]string{"created_by": fmt.Sprintf("security test layer %d", i+1)})
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": runtime.GOARCH, "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}, "history": history})
	cname := hexOf(cfg) + ".json"
	man, _ := json.Marshal([]map[string]any{{"Config": cname, "RepoTags": []string{tag}, "Layers": names}})
	p := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(tag)+".tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(n string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: mtime})
		tw.Write(b)
	}
	for i, b := range blobs {
		add(names[i], b)
	}
	add(cname, cfg)
	add("manifest.json", man)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// euidProgram is a static ELF executable for x86-64 that exits with its
// effective uid (modulo 256): 0 when it ran setuid-root, 254 as nobody.
// Written out here, instruction by instruction, rather than compiled, so the
// test needs no C toolchain and holds no binary of unknown origin.
func euidProgram(t testing.TB) string {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skipf("the setuid test program is written for amd64, not %s", runtime.GOARCH)
	}
	code := []byte{
		0xb8, 0x6b, 0x00, 0x00, 0x00, // mov eax, 107 (geteuid)
		0x0f, 0x05, // syscall
		0x89, 0xc7, // mov edi, eax
		0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (exit)
		0x0f, 0x05, // syscall
	}
	const base, hdr = 0x400000, 64 + 56
	var b bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) { binary.Write(&b, le, v) }
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0}) // 64-bit, little endian, version 1, SysV
	b.Write(make([]byte, 8))
	w(uint16(2))               // e_type: EXEC
	w(uint16(0x3e))            // e_machine: x86-64
	w(uint32(1))               // e_version
	w(uint64(base + hdr))      // e_entry
	w(uint64(64))              // e_phoff
	w(uint64(0))               // e_shoff
	w(uint32(0))               // e_flags
	w(uint16(64))              // e_ehsize
	w(uint16(56))              // e_phentsize
	w(uint16(1))               // e_phnum
	w(uint16(0))               // e_shentsize
	w(uint16(0))               // e_shnum
	w(uint16(0))               // e_shstrndx
	w(uint32(1))               // p_type: LOAD
	w(uint32(5))               // p_flags: R+X
	w(uint64(0))               // p_offset
	w(uint64(base))            // p_vaddr
	w(uint64(base))            // p_paddr
	w(uint64(hdr + len(code))) // p_filesz
	w(uint64(hdr + len(code))) // p_memsz
	w(uint64(0x1000))          // p_align
	b.Write(code)
	return b.String()
}

// importIn imports archive into the store at root and returns its inspection.
func importIn(t testing.TB, root, archive, ref string) inspected {
	t.Helper()
	if r := strataIn(t, root, defaultTimeout, "import", archive); r.Code != 0 {
		t.Fatalf("%v", r)
	}
	r := strataIn(t, root, defaultTimeout, "inspect", ref)
	if r.Code != 0 {
		t.Fatalf("%v", r)
	}
	return parseInspect(t, r.Stdout)
}

// strataMountIn runs `strata mount` against the store at root and registers
// the unmount; it returns the daemon's PID.
func strataMountIn(t testing.TB, root, ref, dir string, extra ...string) int {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	r := strataIn(t, root, defaultTimeout, append([]string{"mount", ref, dir}, extra...)...)
	if r.Code != 0 || !isMounted(dir) {
		t.Fatalf("mount failed or %s not mounted:\n%v", dir, r)
	}
	r = strataIn(t, root, defaultTimeout, "mounts", "--format", "json")
	var ms []struct {
		Mountpoint string
		PID        int
	}
	if err := json.Unmarshal([]byte(r.Stdout), &ms); err != nil {
		t.Fatalf("mounts --format json: %v\n%s", err, r.Stdout)
	}
	for _, m := range ms {
		if m.Mountpoint == dir && m.PID > 0 {
			return m.PID
		}
	}
	t.Fatalf("%s: no daemon PID in strata mounts: %s", dir, r.Stdout)
	return 0
}

// sandboxedMount runs `strata mount REF DIR --upper UPPER -f` in a mount
// namespace of its own in which the root filesystem is read-only: the test
// sends the daemon requests about links to /etc and "/", and a regression
// that followed them must not change this machine (it then fails with EROFS
// where the kernel's overlayfs succeeds, and fanotify still sees it). The
// store and upper live on a tmpfs, a mount of their own, which stays
// writable. The FUSE mount exists only in that namespace; the test reaches
// it through /proc/PID/root, the returned path. The daemon is stopped with
// SIGTERM at cleanup (it unmounts), killed if it lingers.
func sandboxedMount(t testing.TB, root, ref, dir, upper string) (pid int, view string) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(filepath.Dir(dir), filepath.Base(dir)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -o remount,bind,ro / && exec "$0" "$@"`, strataBin, "--root", root, "mount", ref, dir, "--upper", upper, "-f")
	cmd.Env = append(os.Environ(), "STRATA_ROOT=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the sandboxed daemon: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("sandboxed strata (pid %d) still running 10 s after SIGTERM: killing it", cmd.Process.Pid)
			cmd.Process.Kill()
			<-done
		}
	})
	pid = cmd.Process.Pid
	view = fmt.Sprintf("/proc/%d/root%s", pid, dir)
	for deadline := time.Now().Add(20 * time.Second); ; {
		if mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid)); err == nil {
			for _, line := range strings.Split(string(mi), "\n") {
				if f := strings.Fields(line); len(f) > 4 && unescapeMount(f[4]) == dir && strings.Contains(line, " - fuse") {
					return pid, view
				}
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("sandboxed strata mount exited before mounting: %v\n%s", cmd.ProcessState, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("sandboxed strata mount: %s not mounted after 20 s\n%s", dir, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopSandboxed stops a sandboxed daemon and waits for it (its mount goes
// with it).
func stopSandboxed(t testing.TB, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200; i++ {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(b), ") Z ") {
			return // exited, not yet reaped by the cleanup
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("sandboxed strata (pid %d) did not exit after SIGTERM", pid)
}

// tmpfsAt mounts a fresh tmpfs at dir (strictatime, so that any read of a
// file there changes its atime) and removes it at cleanup; register it
// before the mounts that use it.
func tmpfsAt(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, 30*time.Second, "mount", "-t", "tmpfs", "-o", "size=256m,mode=0755,strictatime", "tmpfs", dir)
	t.Cleanup(func() { unmount(t, dir) })
}

// ---------------------------------------------------------------------------
// fanotify

// fanEvent is one event that matters to a test.
type fanEvent struct {
	pid    int
	mask   uint64
	path   string // best effort: the parent directory's path and the name; "" when gone
	canary bool   // on one of the objects, or in one of the directories, in fanWatch.objects
}

func (e fanEvent) String() string {
	p := e.path
	if p == "" {
		p = "(an object since deleted)"
	}
	return fmt.Sprintf("pid %d %s %s", e.pid, fanMaskString(e.mask), p)
}

func fanMaskString(m uint64) string {
	names := []struct {
		bit  uint64
		name string
	}{
		{unix.FAN_ACCESS, "ACCESS"}, {unix.FAN_MODIFY, "MODIFY"}, {unix.FAN_ATTRIB, "ATTRIB"},
		{unix.FAN_CLOSE_WRITE, "CLOSE_WRITE"}, {unix.FAN_CLOSE_NOWRITE, "CLOSE_NOWRITE"}, {unix.FAN_OPEN, "OPEN"},
		{unix.FAN_MOVED_FROM, "MOVED_FROM"}, {unix.FAN_MOVED_TO, "MOVED_TO"}, {unix.FAN_CREATE, "CREATE"},
		{unix.FAN_DELETE, "DELETE"}, {unix.FAN_DELETE_SELF, "DELETE_SELF"}, {unix.FAN_MOVE_SELF, "MOVE_SELF"},
		{unix.FAN_OPEN_EXEC, "OPEN_EXEC"}, {unix.FAN_Q_OVERFLOW, "Q_OVERFLOW"}, {unix.FAN_ONDIR, "ONDIR"},
	}
	var out []string
	for _, n := range names {
		if m&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, "|")
}

// fanWatch is a fanotify group with filesystem marks. It keeps the events of
// the PIDs it is told about, on any marked filesystem, and every event on
// the filesystems marked with keepAll.
type fanWatch struct {
	fd       int
	mountFds map[[2]int32]int // fsid -> an fd on that filesystem, to decode handles
	keepAll  map[[2]int32]bool
	pids     map[int]bool
	seen     map[string]string // object handle -> its path when last seen
	objects  map[string]bool   // handles from objectHandles

	mu       sync.Mutex
	events   []fanEvent
	total    int
	overflow bool
	stop     chan struct{}
	done     chan struct{}
}

const fanMask = unix.FAN_ACCESS | unix.FAN_MODIFY | unix.FAN_ATTRIB | unix.FAN_CLOSE_WRITE | unix.FAN_CLOSE_NOWRITE |
	unix.FAN_OPEN | unix.FAN_OPEN_EXEC | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO | unix.FAN_CREATE | unix.FAN_DELETE |
	unix.FAN_DELETE_SELF | unix.FAN_MOVE_SELF | unix.FAN_ONDIR

// startFanotify marks the filesystem of each path (all events kept for the
// keep ones, only those of pids for the others) and reads events until stop.
func startFanotify(t testing.TB, pids []int, keep []string, others []string) *fanWatch {
	t.Helper()
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_QUEUE|
		unix.FAN_REPORT_FID|unix.FAN_REPORT_DFID_NAME, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("fanotify_init: %v", err)
	}
	w := &fanWatch{fd: fd, mountFds: map[[2]int32]int{}, keepAll: map[[2]int32]bool{}, pids: map[int]bool{},
		seen: map[string]string{}, objects: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, p := range pids {
		w.pids[p] = true
	}
	mark := func(p string, all bool) {
		var sfs unix.Statfs_t
		if err := unix.Statfs(p, &sfs); err != nil {
			t.Fatalf("statfs %s: %v", p, err)
		}
		key := [2]int32{sfs.Fsid.Val[0], sfs.Fsid.Val[1]}
		if all {
			w.keepAll[key] = true
		}
		if _, ok := w.mountFds[key]; ok {
			return
		}
		mfd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		w.mountFds[key] = mfd
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, fanMask, unix.AT_FDCWD, p); err != nil {
			if !all && (err == unix.EXDEV || err == unix.EOPNOTSUPP || err == unix.ENODEV) {
				// e.g. /etc on an overlayfs of an older kernel, which
				// reports no file ids: the other marks still count.
				t.Logf("fanotify cannot watch the filesystem of %s (%v): not watched", p, err)
				return
			}
			t.Fatalf("fanotify_mark %s: %v", p, err)
		}
	}
	for _, p := range keep {
		mark(p, true)
	}
	for _, p := range others {
		mark(p, false)
	}
	go w.loop()
	t.Cleanup(func() { w.finish() })
	return w
}

func (w *fanWatch) loop() {
	defer close(w.done)
	buf := make([]byte, 256<<10)
	pfd := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	for {
		select {
		case <-w.stop:
			// drain what is queued, then stop
			for w.readOnce(buf) {
			}
			return
		default:
		}
		unix.Poll(pfd, 50)
		for w.readOnce(buf) {
		}
	}
}

// readOnce reads and parses one batch; false when nothing was queued.
func (w *fanWatch) readOnce(buf []byte) bool {
	n, err := unix.Read(w.fd, buf)
	if err != nil || n <= 0 {
		return false
	}
	le := binary.LittleEndian
	for off := 0; off+24 <= n; {
		evLen := int(le.Uint32(buf[off:]))
		if evLen < 24 || off+evLen > n {
			break
		}
		metaLen := int(le.Uint16(buf[off+6:]))
		mask := le.Uint64(buf[off+8:])
		pid := int(int32(le.Uint32(buf[off+20:])))
		ev := buf[off : off+evLen]
		off += evLen
		w.mu.Lock()
		w.total++
		if mask&unix.FAN_Q_OVERFLOW != 0 {
			w.overflow = true
		}
		w.mu.Unlock()
		// DFID_NAME: the parent directory and the name; FID: the object.
		var fsid [2]int32
		var dir, obj []byte // handle type (4 bytes) + handle
		name := ""
		for r := metaLen; r+4 <= len(ev); {
			typ, rlen := ev[r], int(le.Uint16(ev[r+2:]))
			if rlen < 4 || r+rlen > len(ev) {
				break
			}
			rec := ev[r : r+rlen]
			r += rlen
			if len(rec) < 20 {
				continue
			}
			hb := int(le.Uint32(rec[12:]))
			if 20+hb > len(rec) {
				continue
			}
			fsid = [2]int32{int32(le.Uint32(rec[4:])), int32(le.Uint32(rec[8:]))}
			h := append([]byte(nil), rec[16:20+hb]...)
			switch typ {
			case unix.FAN_EVENT_INFO_TYPE_DFID_NAME:
				dir = h
				nm := rec[20+hb:]
				if i := bytes.IndexByte(nm, 0); i >= 0 {
					nm = nm[:i]
				}
				name = string(nm)
			case unix.FAN_EVENT_INFO_TYPE_DFID:
				dir = h
			case unix.FAN_EVENT_INFO_TYPE_FID:
				obj = h
			}
		}
		if !w.keepAll[fsid] && !w.pids[pid] {
			continue
		}
		p := ""
		if dir != nil {
			p = w.handlePath(fsid, dir)
			if p != "" && name != "" && name != "." {
				p += "/" + name
			}
		}
		ev1 := fanEvent{pid: pid, mask: mask}
		w.mu.Lock()
		if obj != nil {
			key := fanKey(fsid, obj)
			if p != "" {
				w.seen[key] = p // remembered for events after its deletion
			} else if p = w.handlePath(fsid, obj); p == "" {
				p = w.seen[key]
			}
			ev1.canary = w.objects[key]
		}
		if dir != nil && w.objects[fanKey(fsid, dir)] {
			ev1.canary = true
		}
		ev1.path = p
		w.events = append(w.events, ev1)
		w.mu.Unlock()
	}
	return true
}

func fanKey(fsid [2]int32, h []byte) string {
	var b [8]byte
	binary.LittleEndian.PutUint32(b[:], uint32(fsid[0]))
	binary.LittleEndian.PutUint32(b[4:], uint32(fsid[1]))
	return string(b[:]) + string(h)
}

// objectHandles returns the fanotify keys of dir and everything under it,
// for fanWatch.objects (set before the events happen). Directories are read
// with O_NOATIME: taking the handles changes nothing.
func objectHandles(t testing.TB, dir string) map[string]bool {
	t.Helper()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	fsid := [2]int32{sfs.Fsid.Val[0], sfs.Fsid.Val[1]}
	set := map[string]bool{}
	var walk func(p string)
	walk = func(p string) {
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
		if err != nil {
			t.Fatalf("name_to_handle_at %s: %v", p, err)
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(h.Type()))
		set[fanKey(fsid, append(b[:], h.Bytes()...))] = true
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		f := os.NewFile(uintptr(fd), p)
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			t.Fatalf("readdir %s: %v", p, err)
		}
		for _, n := range names {
			walk(filepath.Join(p, n))
		}
	}
	walk(dir)
	return set
}

// handlePath is the path of the object a handle (type + handle) names, or
// "" when it no longer exists.
func (w *fanWatch) handlePath(fsid [2]int32, h []byte) string {
	mfd, ok := w.mountFds[fsid]
	if !ok || len(h) < 4 {
		return ""
	}
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(int32(binary.LittleEndian.Uint32(h)), h[4:]), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	p, err := os.Readlink(fdPath(fd))
	if err != nil || strings.HasSuffix(p, " (deleted)") {
		return ""
	}
	return p
}

// snapshot returns the events kept so far, waiting briefly for the queue to
// drain first.
func (w *fanWatch) snapshot() []fanEvent {
	time.Sleep(300 * time.Millisecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]fanEvent(nil), w.events...)
}

func (w *fanWatch) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	unix.Close(w.fd)
	for _, fd := range w.mountFds {
		unix.Close(fd)
	}
	w.mountFds = nil
}

// ---------------------------------------------------------------------------
// A directory tree's full state, atimes included

// snapshotTree describes every entry under dir: type, mode, owner, size,
// content hash, link target, xattrs, and atime, mtime and ctime to the
// nanosecond. Files and directories are read with O_NOATIME, so taking it
// changes nothing.
func snapshotTree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(dir, rel)
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		line := fmt.Sprintf("%s %s %04o %d:%d s=%d a=%d.%09d m=%d.%09d c=%d.%09d", rel, typeLetter(s.Mode), s.Mode&0o7777,
			s.Uid, s.Gid, s.Size, s.Atim.Sec, s.Atim.Nsec, s.Mtim.Sec, s.Mtim.Nsec, s.Ctim.Sec, s.Ctim.Nsec)
		xs, err := xattrList(p, true)
		if err != nil {
			t.Fatalf("xattrs of %s: %v", p, err)
		}
		line += " x=" + xs
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatalf("open %s: %v", p, err)
			}
			b, err := readFd(fd)
			unix.Close(fd)
			if err != nil {
				t.Fatalf("read %s: %v", p, err)
			}
			sum := sha256.Sum256([]byte(b))
			line += " sha=" + hex.EncodeToString(sum[:8])
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case unix.S_IFDIR:
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatalf("open %s: %v", p, err)
			}
			f := os.NewFile(uintptr(fd), p)
			names, err := f.Readdirnames(-1)
			f.Close()
			if err != nil {
				t.Fatalf("readdir %s: %v", p, err)
			}
			sort.Strings(names)
			out = append(out, line)
			for _, n := range names {
				walk(filepath.Join(rel, n))
			}
			return
		}
		out = append(out, line)
	}
	walk(".")
	return out
}

// ---------------------------------------------------------------------------
// Comparing with the kernel's overlayfs

// secCompare runs ops on the kernel's mount and on strata's, alternating op
// by op so that both see the same history, and reports every disagreement.
// kctx and sctx resolve paths the same way (both host or both in-root).
func secCompare(t testing.TB, what string, kctx, sctx *secCtx, ops []secOp, verbose bool) (disagree int) {
	t.Helper()
	for i, o := range ops {
		k := kctx.do(o)
		s := sctx.do(o)
		if verbose {
			t.Logf("%s %d %v: kernel %s | strata %s", what, i, o, k, s)
		}
		if k != s {
			disagree++
			t.Errorf("%s: step %d %v: kernel overlayfs %s, strata %s", what, i, o, k, s)
		}
	}
	return disagree
}

// secCompareTrees compares the trees (listTree) of the kernel's side and
// strata's; a tree that cannot be listed is an error, not the end of the test.
func secCompareTrees(t testing.TB, what, kdir, sdir string, upper bool) {
	t.Helper()
	k, err := listTree(kdir, upper)
	if err != nil {
		t.Errorf("%s: listing the kernel overlayfs side: %v", what, err)
		return
	}
	s, err := listTree(sdir, upper)
	if err != nil {
		t.Errorf("%s: listing strata's side: %v", what, err)
		return
	}
	if d := diffLines(k, s, 40); d != "" {
		t.Errorf("%s differ (- kernel overlayfs, + strata):\n%s", what, d)
	}
}

// secVerbose: STRATA_SECURITY_VERBOSE=1 logs every operation's results.
func secVerbose() bool { return os.Getenv("STRATA_SECURITY_VERBOSE") != "" }

// ---------------------------------------------------------------------------
// Hostile symlinks

// escapeLayers is an image whose links lead out of it in every way a layer
// can say so, with symlinked directories shadowed by real ones and the
// other way round. canary is the host directory the absolute links name.
func escapeLayers(canary string) [][]secEntry {
	climb := strings.Repeat("../", 16) // from any layer or mount directory up to "/"
	l1 := []secEntry{
		secDir("etc/", 0o755, 0, 0),
		secFile("etc/passwd", 0o644, 0, 0, "root:x:0:0:image:/root:/bin/sh\n"),
		secFile("etc/shadow", 0o600, 0, 0, "image shadow\n"),
		secDir("dirlink/", 0o755, 0, 0), // hidden by the symlink dirlink in layer 3
		secFile("dirlink/inner", 0o644, 0, 0, "a lower dir under a symlink\n"),
		secDir("realdir/", 0o755, 0, 0), // hidden: layer 2 has a symlink realdir
		secFile("realdir/hidden", 0o644, 0, 0, "below a symlink below a dir\n"),
		secDir("tmp/", 0o1777, 0, 0),
		secDir("d/", 0o755, 0, 0),
	}
	l2 := []secEntry{
		secLink("realdir", canary), // between two real directories
		secLink("shadow", canary),  // under a real directory
		secDir("evil/", 0o755, 0, 0),
		secLink("evil/canary", canary),
	}
	l3 := []secEntry{
		secLink("dirlink", canary), // over a real directory
		secDir("realdir/", 0o755, 0, 0),
		secFile("realdir/passwd", 0o644, 0, 0, "top realdir\n"),
		secDir("shadow/", 0o755, 0, 0),
		secFile("shadow/passwd", 0o644, 0, 0, "top shadow\n"),
		secDir("evil/", 0o755, 0, 0),
		secLink("evil/etc", "/etc"),
		secLink("evil/rel", climb+strings.TrimPrefix(canary, "/")),
		secLink("evil/up", "../../../../../../../.."),
		secLink("evil/self", "self"),
		secLink("evil/loopa", "loopb"),
		secLink("evil/loopb", "loopa"),
		secLink("evil/etcdir", "../etc"),
		secLink("evil/dotdot", ".."),
		secDir("d/", 0o755, 0, 0),
		secLink("d/esc", climb+strings.TrimPrefix(canary, "/")+"/sub"),
		secLink("up", "../../.."),
		secLink("etclink", "/etc/passwd"),
	}
	return [][]secEntry{l1, l2, l3}
}

// escapeLinks are the image's hostile symlinks, named from the host.
var escapeLinks = []string{"evil/etc", "evil/canary", "evil/rel", "evil/up", "evil/self", "evil/loopa",
	"evil/etcdir", "evil/dotdot", "dirlink", "d/esc", "up", "etclink"}

// escapeFiles are names below the links, resolved inside the image.
var escapeFiles = []string{"evil/etc/passwd", "evil/up/etc/passwd", "evil/etcdir/passwd", "evil/dotdot/etc/passwd",
	"evil/canary/passwd", "evil/rel/passwd", "evil/self/x", "evil/loopa/x", "dirlink/inner", "dirlink/passwd",
	"realdir/passwd", "realdir/hidden", "shadow/passwd", "d/esc/deep", "up/etc/shadow", "etclink"}

// escapeDirs are directories reached through the links, inside the image.
var escapeDirs = []string{"evil/etc", "evil/up/etc", "evil/etcdir", "evil/dotdot", "evil/canary", "evil/rel",
	"evil/self", "evil/loopa", "dirlink", "realdir", "shadow", "d/esc", "up"}

// hostLinkOps act on each link itself, from the host: nothing follows it.
func hostLinkOps() []secOp {
	var ops []secOp
	for _, s := range escapeLinks {
		ops = append(ops,
			secOp{Op: "lstat", P: s},
			secOp{Op: "readlink", P: s},
			secOp{Op: "opath-nofollow", P: s},
			secOp{Op: "openro-nofollow", P: s},
			secOp{Op: "lgetxattr", P: s, Q: "user.x"},
			secOp{Op: "llistxattr", P: s},
			secOp{Op: "lsetxattr", P: s, Q: "trusted.sec", V: "1"},
			secOp{Op: "lgetxattr", P: s, Q: "trusted.sec"},
			secOp{Op: "lremovexattr", P: s, Q: "trusted.sec"},
			secOp{Op: "lchown", P: s, N: 123, G: 456},
			secOp{Op: "lutimes", P: s},
			secOp{Op: "lchmod", P: s, M: 0o700},
			secOp{Op: "create", P: s, M: 0o644, V: "x"},
			secOp{Op: "mkdir", P: s, M: 0o755},
			secOp{Op: "mkfifo", P: s, M: 0o644},
			secOp{Op: "mknod", P: s, M: 0o600},
			secOp{Op: "symlink", P: s, V: "/etc/shadow"},
			secOp{Op: "rmdir", P: s},
			secOp{Op: "link", P: s, Q: s + ".hl"},
			secOp{Op: "lstat", P: s + ".hl"},
			secOp{Op: "rename", P: s, Q: s + ".mv"},
			secOp{Op: "readlink", P: s + ".mv"},
			secOp{Op: "rename", P: s + ".mv", Q: s},
			secOp{Op: "unlink", P: s + ".hl"},
			secOp{Op: "lstat", P: s},
		)
	}
	return ops
}

// inRootOps go through the links as a process chrooted into the image
// would: every write operation, on files and in directories below them.
func inRootOps() []secOp {
	var ops []secOp
	for _, f := range escapeFiles {
		ops = append(ops,
			secOp{Op: "stat", P: f},
			secOp{Op: "read", P: f},
			secOp{Op: "getxattr", P: f, Q: "user.x"},
			secOp{Op: "listxattr", P: f},
			secOp{Op: "append", P: f, V: "+w"},
			secOp{Op: "chmod", P: f, M: 0o640},
			secOp{Op: "chown", P: f, N: 7, G: 8},
			secOp{Op: "utimes", P: f},
			secOp{Op: "truncate", P: f, N: 5},
			secOp{Op: "setxattr", P: f, Q: "user.sec", V: "v"},
			secOp{Op: "setxattr", P: f, Q: "trusted.sec", V: "v"},
			secOp{Op: "getxattr", P: f, Q: "trusted.sec"},
			secOp{Op: "removexattr", P: f, Q: "user.sec"},
			secOp{Op: "trunc", P: f, M: 0o644, V: "rewritten"},
			secOp{Op: "stat", P: f},
			secOp{Op: "read", P: f},
		)
	}
	for i, d := range escapeDirs {
		n := func(s string) string { return fmt.Sprintf("%s/%s%d", d, s, i) }
		ops = append(ops,
			secOp{Op: "readdir", P: d},
			secOp{Op: "create", P: n("n"), M: 0o644, V: "new"},
			secOp{Op: "trunc", P: n("t"), M: 0o600, V: "t"},
			secOp{Op: "mkdir", P: n("m"), M: 0o755},
			secOp{Op: "mkfifo", P: n("f"), M: 0o644},
			secOp{Op: "mknod", P: n("c"), M: 0o600},
			secOp{Op: "symlink", P: n("s"), V: "/etc/shadow"},
			secOp{Op: "link", P: "etc/passwd", Q: n("h")},
			secOp{Op: "rename", P: n("n"), Q: n("nb")},
			secOp{Op: "rename", P: n("nb"), Q: fmt.Sprintf("tmp/mv%d", i)},
			secOp{Op: "rename", P: fmt.Sprintf("tmp/mv%d", i), Q: n("back")},
			secOp{Op: "lstat", P: n("s")},
			secOp{Op: "read", P: n("s")},
			secOp{Op: "unlink", P: n("back")},
			secOp{Op: "unlink", P: n("h")},
			secOp{Op: "rmdir", P: n("m")},
			secOp{Op: "unlink", P: n("f")},
			secOp{Op: "readdir", P: d},
		)
	}
	ops = append(ops,
		secOp{Op: "rename", P: "realdir/passwd", Q: "evil/etc/rp"},
		secOp{Op: "rename", P: "evil/etc/rp", Q: "realdir/passwd"},
		secOp{Op: "rename", P: "shadow", Q: "shadow2"},
		secOp{Op: "readdir", P: "shadow2"},
		secOp{Op: "rename", P: "realdir", Q: "evil/realdir2"},
		secOp{Op: "readdir", P: "evil/realdir2"},
		secOp{Op: "rename", P: "dirlink", Q: "tmp/dirlink"},
		secOp{Op: "lstat", P: "tmp/dirlink"},
		secOp{Op: "rmdir", P: "evil/etc"},
		secOp{Op: "rename", P: "etc", Q: "evil/etc"},
		secOp{Op: "readdir", P: "evil/etc"},
		secOp{Op: "rename", P: "evil/etc", Q: "etc"},
	)
	return ops
}

// hostFinalOps remove the links (whiteouts) and make new objects in their place.
func hostFinalOps(canary string) []secOp {
	var ops []secOp
	for _, s := range escapeLinks {
		ops = append(ops, secOp{Op: "unlink", P: s}, secOp{Op: "lstat", P: s})
	}
	return append(ops,
		secOp{Op: "mkdir", P: "evil/etc", M: 0o755},
		secOp{Op: "readdir", P: "evil/etc"},
		secOp{Op: "symlink", P: "evil/canary", V: canary},
		secOp{Op: "readlink", P: "evil/canary"},
		secOp{Op: "readdir", P: "evil"},
	)
}

// TestReliabilityMountEscape: nothing a layer holds makes the daemon touch
// anything outside its layers, whatever is done through the mount (see the
// comment at the top of this file for how the test tells the daemon's
// accesses from the caller's).
func TestReliabilityMountEscape(t *testing.T) {
	requireCommands(t, "import", "mount", "mounts")
	base := t.TempDir()
	fsDir := filepath.Join(base, "fs") // the store, the canary, the uppers
	tmpfsAt(t, fsDir)
	canary := filepath.Join(fsDir, "canary")
	store := filepath.Join(fsDir, "store")
	if err := os.MkdirAll(filepath.Join(canary, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"passwd": "CANARY passwd\n", "secret": "CANARY secret\n", "sub/deep": "CANARY deep\n"} {
		if err := os.WriteFile(filepath.Join(canary, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Setxattr(filepath.Join(canary, "passwd"), "user.canary", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	old := []unix.Timespec{{Sec: 1e9, Nsec: 1}, {Sec: 1e9, Nsec: 2}}
	for _, p := range []string{"sub/deep", "sub", "passwd", "secret", "."} {
		unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(canary, p), old, 0)
	}

	archive := secArchive(t, base, "sec/escape:1", escapeLayers(canary)...)
	in := importIn(t, store, archive, "sec/escape:1")
	lowers := topFirst(in.LayerDirs)
	guardLowers(t, lowerStack{lowers: lowers})

	sUpper := filepath.Join(fsDir, "strata-upper")
	sWork := filepath.Join(fsDir, ".strata-upper.work") // where strata mount --upper puts it
	kUpper, kWork := filepath.Join(fsDir, "kernel-upper"), filepath.Join(fsDir, "kernel-work")
	for _, d := range []string{kUpper, kWork} {
		os.MkdirAll(d, 0o755)
	}
	sMnt, kMnt := filepath.Join(base, "strata"), filepath.Join(base, "kernel")
	pid, sView := sandboxedMount(t, store, "sec/escape:1", sMnt, sUpper)
	kernelOverlay(t, lowers, kUpper, kWork, kMnt, kernelDefaultOpts...)

	canaryBefore := snapshotTree(t, canary)
	canaryObjects := objectHandles(t, canary)
	w := startFanotify(t, []int{pid}, []string{fsDir}, []string{"/etc"})
	w.mu.Lock()
	w.objects = canaryObjects
	w.mu.Unlock()

	ctx := func(root string, inRoot bool) *secCtx {
		c, err := newSecCtx(root, inRoot)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.close) // also closed before the unmounts: it holds the mount
		return c
	}
	kh, sh := ctx(kMnt, false), ctx(sView, false)
	kr, sr := ctx(kMnt, true), ctx(sView, true)
	v := secVerbose()
	hostOps, rootOps, finalOps := hostLinkOps(), inRootOps(), hostFinalOps(canary)
	bad := secCompare(t, "links from the host", kh, sh, hostOps, v)
	bad += secCompare(t, "through the links, in the image's root", kr, sr, rootOps, v)
	bad += secCompare(t, "replacing the links", kh, sh, finalOps, v)
	nops := len(hostOps) + len(rootOps) + len(finalOps)
	secCompareTrees(t, "merged trees", kMnt, sView, false)

	// What fanotify saw while the operations ran.
	inside := func(p string, dirs ...string) bool {
		for _, d := range dirs {
			if p == d || strings.HasPrefix(p, d+"/") {
				return true
			}
		}
		return false
	}
	evs := w.snapshot()
	daemonOnLayers, gone := 0, 0
	for _, e := range evs {
		switch {
		case e.canary || inside(e.path, canary):
			t.Errorf("the canary was touched: %v (strata's daemon is pid %d)", e, pid)
		case e.pid == pid && inside(e.path, store):
			daemonOnLayers++
		case e.pid == pid && inside(e.path, sUpper, sWork):
		case e.pid == pid && e.path == "":
			// Deleted before the event was read (work/ staging,
			// removed names); not a canary object, which all exist.
			gone++
		case e.pid == pid:
			t.Errorf("strata's daemon touched something outside its layers, upper and work dirs: %v", e)
		}
	}
	if daemonOnLayers == 0 {
		t.Errorf("fanotify saw no access of the daemon (pid %d) to its layers: the watch does not work", pid)
	}
	if canaryAfter := snapshotTree(t, canary); diffLines(canaryBefore, canaryAfter, 20) != "" {
		t.Errorf("the canary changed (- before, + after):\n%s", diffLines(canaryBefore, canaryAfter, 20))
	}

	// Positive control: a host process reading through a link into the
	// canary is seen, as itself; the daemon only answered the readlink.
	cat := exec.Command("cat", filepath.Join(sView, "evil/canary/passwd"))
	var catOut bytes.Buffer
	cat.Stdout = &catOut
	if err := cat.Run(); err != nil || catOut.String() != "CANARY passwd\n" {
		t.Fatalf("cat through the recreated link: %v %q", err, catOut.String())
	}
	seenCat := false
	for _, e := range w.snapshot()[len(evs):] {
		if e.pid == cat.Process.Pid && e.canary && inside(e.path, canary) {
			seenCat = true
		}
		if e.pid == pid && (e.canary || inside(e.path, canary)) {
			t.Errorf("the daemon touched the canary when a host process read through a link: %v", e)
		}
	}
	if !seenCat {
		t.Errorf("fanotify did not see cat (pid %d) read the canary through the link: the watch does not work", cat.Process.Pid)
	}

	// The uppers, once both are unmounted.
	for _, c := range []*secCtx{kh, sh, kr, sr} {
		c.close()
	}
	stopSandboxed(t, pid)
	unmount(t, kMnt)
	secCompareTrees(t, "upper directories", kUpper, sUpper, true)
	w.mu.Lock()
	total, overflow := w.total, w.overflow
	w.mu.Unlock()
	if overflow {
		t.Errorf("fanotify queue overflowed: events were lost")
	}
	t.Logf("%d operations on both mounts, %d disagreements; fanotify: %d events on the watched filesystems, %d kept, %d accesses of the daemon to its layers, %d to objects deleted before they were read, 0 allowed outside",
		nops, bad, total, len(evs), daemonOnLayers, gone)
}

// ---------------------------------------------------------------------------
// A plain user on a root-owned mount; nosuid and nodev

// permLayers is an image with owners and modes to be refused by, a setuid-root
// program and a device node.
func permLayers(t testing.TB) [][]secEntry {
	const nobody = 65534
	l1 := []secEntry{
		secFile("secret", 0o600, 0, 0, "root only\n"),
		secFile("public", 0o644, 0, 0, "everyone\n"),
		secDir("priv/", 0o711, 0, 0),
		secFile("priv/known", 0o644, 0, 0, "known name\n"),
		secFile("priv/closed", 0o600, 0, 0, "closed\n"),
		secDir("ro/", 0o755, 0, 0),
		secFile("ro/victim", 0o644, 0, 0, "victim\n"),
		secDir("ro/sub/", 0o755, 0, 0),
		secDir("tmp/", 0o1777, 0, 0),
		secFile("tmp/rootfile", 0o644, 0, 0, "root's\n"),
		secFile("tmp/nobodyfile", 0o644, nobody, nobody, "nobody's\n"),
		secDir("tmp/rootdir/", 0o755, 0, 0),
		secDir("nobodydir/", 0o755, nobody, nobody),
		secFile("nobodydir/own", 0o644, nobody, nobody, "mine\n"),
		secFile("nobodydir/rootowned", 0o644, 0, 0, "root's, in nobody's dir\n"),
		secDir("groupw/", 0o775, 0, nobody),
		secDir("bin/", 0o755, 0, 0),
		secFile("bin/euid", 0o4755, 0, 0, euidProgram(t)),
		secFile("bin/euid-plain", 0o755, 0, 0, euidProgram(t)),
		secDir("dev/", 0o755, 0, 0),
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
	}
	l2 := []secEntry{
		secDir("ro/", 0o755, 0, 0),
		secFile("ro/victim2", 0o644, 0, 0, "top victim\n"),
		secDir("tmp/", 0o1777, 0, 0),
		secFile("tmp/toprootfile", 0o600, 0, 0, "top\n"),
		secFile("public2", 0o444, 0, 0, "read-only for all\n"),
	}
	return [][]secEntry{l1, l2}
}

// nobodyOps is what a plain user tries on a root-owned mount, with what the
// permissions allow; every result is also compared with the kernel's
// overlayfs.
var nobodyOps = []struct {
	op   secOp
	want string // "" when only the comparison counts
}{
	{secOp{Op: "read", P: "public"}, `ok "everyone\n"`},
	{secOp{Op: "read", P: "secret"}, "EACCES"},
	{secOp{Op: "stat", P: "secret"}, "ok f 0600 0:0 s=10"},
	{secOp{Op: "read", P: "public2"}, ""},
	{secOp{Op: "openw", P: "public2"}, "EACCES"},
	{secOp{Op: "readdir", P: "priv"}, "EACCES"},
	{secOp{Op: "stat", P: "priv/known"}, ""},
	{secOp{Op: "read", P: "priv/known"}, `ok "known name\n"`},
	{secOp{Op: "read", P: "priv/closed"}, "EACCES"},
	{secOp{Op: "create", P: "priv/new", M: 0o644}, "EACCES"},
	{secOp{Op: "readdir", P: "ro"}, "ok sub,victim,victim2"},
	{secOp{Op: "create", P: "ro/new", M: 0o644}, "EACCES"},
	{secOp{Op: "trunc", P: "ro/new2", M: 0o644}, "EACCES"},
	{secOp{Op: "mkdir", P: "ro/newd", M: 0o755}, "EACCES"},
	{secOp{Op: "mkfifo", P: "ro/fifo", M: 0o644}, "EACCES"},
	{secOp{Op: "symlink", P: "ro/sl", V: "x"}, "EACCES"},
	{secOp{Op: "link", P: "nobodydir/own", Q: "ro/l"}, "EACCES"},
	{secOp{Op: "unlink", P: "ro/victim"}, "EACCES"},
	{secOp{Op: "unlink", P: "ro/victim2"}, "EACCES"},
	{secOp{Op: "rmdir", P: "ro/sub"}, "EACCES"},
	{secOp{Op: "rename", P: "ro/victim", Q: "tmp/v"}, "EACCES"},
	{secOp{Op: "rename", P: "nobodydir/own", Q: "ro/own"}, "EACCES"},
	{secOp{Op: "openw", P: "public"}, "EACCES"},
	{secOp{Op: "append", P: "public", V: "x"}, "EACCES"},
	{secOp{Op: "trunc", P: "public", M: 0o644}, "EACCES"},
	{secOp{Op: "truncate", P: "public", N: 1}, "EACCES"},
	{secOp{Op: "chmod", P: "public", M: 0o777}, "EPERM"},
	{secOp{Op: "chown", P: "public", N: 65534, G: 65534}, "EPERM"},
	{secOp{Op: "chown", P: "nobodydir/own", N: 0, G: 0}, "EPERM"},
	{secOp{Op: "chown", P: "nobodydir/own", N: 65534, G: 0}, "EPERM"},
	{secOp{Op: "utimes", P: "public"}, "EPERM"},
	{secOp{Op: "touch", P: "public"}, "EACCES"},
	{secOp{Op: "setxattr", P: "public", Q: "user.x", V: "1"}, "EACCES"},
	{secOp{Op: "setxattr", P: "tmp/nobodyfile", Q: "trusted.x", V: "1"}, "EPERM"},
	{secOp{Op: "setxattr", P: "nobodydir/own", Q: "trusted.x", V: "1"}, "EPERM"},
	{secOp{Op: "setxattr", P: "nobodydir/own", Q: "user.x", V: "1"}, "ok"},
	{secOp{Op: "getxattr", P: "nobodydir/own", Q: "user.x"}, `ok "1"`},
	{secOp{Op: "removexattr", P: "nobodydir/own", Q: "user.x"}, "ok"},
	{secOp{Op: "getxattr", P: "secret", Q: "trusted.x"}, ""},
	{secOp{Op: "touch", P: "nobodydir/own"}, "ok"},
	{secOp{Op: "utimes", P: "nobodydir/own"}, "ok"},
	{secOp{Op: "chmod", P: "nobodydir/own", M: 0o600}, "ok"},
	{secOp{Op: "append", P: "nobodydir/own", V: "more"}, "ok"},
	// the sticky /tmp
	{secOp{Op: "create", P: "tmp/mine", M: 0o644, V: "x"}, "ok"},
	{secOp{Op: "openw", P: "tmp/rootfile"}, "EACCES"},
	{secOp{Op: "unlink", P: "tmp/rootfile"}, "EPERM"},
	{secOp{Op: "unlink", P: "tmp/toprootfile"}, "EPERM"},
	{secOp{Op: "rename", P: "tmp/rootfile", Q: "tmp/r2"}, "EPERM"},
	{secOp{Op: "rename", P: "tmp/mine", Q: "tmp/rootfile"}, "EPERM"},
	{secOp{Op: "rmdir", P: "tmp/rootdir"}, "EPERM"},
	{secOp{Op: "create", P: "tmp/rootdir/x", M: 0o644}, "EACCES"},
	{secOp{Op: "rename", P: "tmp/mine", Q: "tmp/mine2"}, "ok"},
	{secOp{Op: "unlink", P: "tmp/mine2"}, "ok"},
	{secOp{Op: "unlink", P: "tmp/nobodyfile"}, "ok"},
	// nobody's own directory, and a group-writable one
	{secOp{Op: "create", P: "nobodydir/new", M: 0o644, V: "n"}, "ok"},
	{secOp{Op: "mkdir", P: "nobodydir/d", M: 0o755}, "ok"},
	{secOp{Op: "rename", P: "nobodydir/new", Q: "nobodydir/d/new"}, "ok"},
	{secOp{Op: "unlink", P: "nobodydir/rootowned"}, "ok"},
	{secOp{Op: "create", P: "groupw/g", M: 0o640, V: "g"}, "ok"},
	{secOp{Op: "lstat", P: "groupw/g"}, "ok f 0640 65534:65534 s=1"},
	{secOp{Op: "mknod", P: "nobodydir/null", M: 0o666}, "EPERM"},
	{secOp{Op: "lstat", P: "bin/euid"}, ""},
}

// TestReliabilityNonRootUser: nobody on a mount made by root (allow_other,
// default_permissions) can do exactly what the permissions allow, as on the
// kernel's overlayfs over the same layers.
func TestReliabilityNonRootUser(t *testing.T) {
	requireCommands(t, "import", "mount", "mounts")
	base := publicTempDir(t)
	helper := nobodyHelper(t, base)
	store := filepath.Join(base, "store")
	archive := secArchive(t, base, "sec/perm:1", permLayers(t)...)
	in := importIn(t, store, archive, "sec/perm:1")
	lowers := topFirst(in.LayerDirs)
	guardLowers(t, lowerStack{lowers: lowers})
	sMnt, kMnt := filepath.Join(base, "strata"), filepath.Join(base, "kernel")
	sUpper, kUpper, kWork := filepath.Join(base, "strata-upper"), filepath.Join(base, "kernel-upper"), filepath.Join(base, "kernel-work")
	for _, d := range []string{kUpper, kWork} {
		os.MkdirAll(d, 0o755)
	}
	strataMountIn(t, store, "sec/perm:1", sMnt, "--upper", sUpper)
	kernelOverlay(t, lowers, kUpper, kWork, kMnt, kernelDefaultOpts...)

	ops := make([]secOp, len(nobodyOps))
	for i, o := range nobodyOps {
		ops[i] = o.op
	}
	// One operation per helper run would be slow; the whole list runs on
	// the kernel's mount, then on strata's, each from the same start.
	k := runAsNobody(t, helper, secScript{Root: kMnt, Ops: ops})
	s := runAsNobody(t, helper, secScript{Root: sMnt, Ops: ops})
	refused := 0
	for i, o := range nobodyOps {
		if secVerbose() {
			t.Logf("%d %v: kernel %s | strata %s", i, o.op, k[i], s[i])
		}
		if k[i] != s[i] {
			t.Errorf("as nobody: %v: kernel overlayfs %s, strata %s", o.op, k[i], s[i])
		}
		if o.want != "" && s[i] != o.want {
			t.Errorf("as nobody: %v: strata %s, want %s", o.op, s[i], o.want)
		}
		if strings.HasPrefix(s[i], "EACCES") || strings.HasPrefix(s[i], "EPERM") {
			refused++
		}
	}
	secCompareTrees(t, "merged trees after nobody's operations", kMnt, sMnt, false)
	unmount(t, sMnt)
	unmount(t, kMnt)
	secCompareTrees(t, "upper directories after nobody's operations", kUpper, sUpper, true)
	t.Logf("%d operations as nobody on both mounts, %d refused by permissions", len(ops), refused)
}

// mountFlags returns the per-mount flags of the mount at dir that matter
// here, as "nosuid,nodev,ro" (those present).
func mountFlags(t testing.TB, dir string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || unescapeMount(f[4]) != dir {
			continue
		}
		found = found[:0]
		opts := "," + f[5] + ","
		for _, o := range []string{"nosuid", "nodev", "ro"} {
			if strings.Contains(opts, ","+o+",") {
				found = append(found, o)
			}
		}
		if len(found) == 0 {
			found = append(found, "-")
		}
	}
	if found == nil {
		t.Fatalf("%s is not mounted", dir)
	}
	return strings.Join(found, ",")
}

// behaviour is what the flags of a mount do: nobody running the setuid-root
// program (exit 0: it ran as root; 254: as nobody), root opening the device
// node for writing, root creating a file.
func behaviour(t testing.TB, helper, mnt string) string {
	t.Helper()
	r := runAsNobody(t, helper, secScript{Root: mnt, Ops: []secOp{{Op: "exec", P: "bin/euid"}, {Op: "exec", P: "bin/euid-plain"}}})
	c, err := newSecCtx(mnt, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	dev := c.do(secOp{Op: "openrw", P: "dev/null"})
	create := c.do(secOp{Op: "create", P: fmt.Sprintf("probe-%d", time.Now().UnixNano()), M: 0o644})
	mode := c.do(secOp{Op: "lstat", P: "bin/euid"})
	return fmt.Sprintf("setuid program as nobody: %s (plain: %s); open dev/null: %s; create: %s; bin/euid: %s", r[0], r[1], dev, create, mode)
}

// startCompat runs `strata -o OPTS -f DIR` and returns when DIR is mounted;
// cleanup unmounts it and waits for the daemon.
func startCompat(t testing.TB, opts, dir string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	cmd := exec.Command(strataBin, "-o", opts, "-f", dir)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		unmount(t, dir)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("strata -o (pid %d) still running after its unmount: killing it", cmd.Process.Pid)
			cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(20 * time.Second); !isFuseMount(dir); {
		select {
		case <-done:
			t.Fatalf("strata -o %s -f %s exited: %v\n%s", opts, dir, cmd.ProcessState, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("strata -o %s -f %s: not mounted after 20 s", opts, dir)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReliabilityNosuidNodev: `strata mount` is nosuid,nodev unless --suid,
// --dev; the fuse-overlayfs compatible invocation honours suid, nosuid, dev,
// nodev, ro and rw, with fuse-overlayfs' defaults, flags and behaviour alike.
func TestReliabilityNosuidNodev(t *testing.T) {
	requireCommands(t, "import", "mount", "mounts")
	base := publicTempDir(t)
	helper := nobodyHelper(t, base)
	store := filepath.Join(base, "store")
	archive := secArchive(t, base, "sec/perm:1", permLayers(t)...)
	in := importIn(t, store, archive, "sec/perm:1")
	lowers := topFirst(in.LayerDirs)
	guardLowers(t, lowerStack{lowers: lowers})

	const (
		asRoot   = "exit 0"
		asNobody = "exit 254"
		modeLine = "ok f 4755 0:0 s=136"
	)
	expect := func(suid, dev, ro bool) string {
		e, d, c := "ok "+asNobody, "EACCES", "ok"
		if suid {
			e = "ok " + asRoot
		}
		if dev {
			d = "ok"
		}
		if ro {
			c = "EROFS"
		}
		return fmt.Sprintf("setuid program as nobody: %s (plain: ok %s); open dev/null: %s; create: %s; bin/euid: %s", e, asNobody, d, c, modeLine)
	}
	t.Run("strata mount", func(t *testing.T) {
		for _, c := range []struct {
			args          []string
			flags         string
			suid, dev, ro bool
		}{
			{nil, "nosuid,nodev", false, false, false},
			{[]string{"--suid"}, "nodev", true, false, false},
			{[]string{"--dev"}, "nosuid", false, true, false},
			{[]string{"--suid", "--dev"}, "-", true, true, false},
			{[]string{"--read-only"}, "nosuid,nodev,ro", false, false, true},
		} {
			name := "default"
			if len(c.args) > 0 {
				name = strings.Join(c.args, " ")
			}
			mnt := filepath.Join(base, "m"+strings.ReplaceAll(name, " ", ""))
			strataMountIn(t, store, "sec/perm:1", mnt, append([]string{"--upper", mnt + ".upper"}, c.args...)...)
			if f := mountFlags(t, mnt); f != c.flags {
				t.Errorf("strata mount %s: mount flags %s, want %s", name, f, c.flags)
			}
			if b, want := behaviour(t, helper, mnt), expect(c.suid, c.dev, c.ro); b != want {
				t.Errorf("strata mount %s:\n got %s\nwant %s", name, b, want)
			}
			unmount(t, mnt)
		}
		// The kernel's overlayfs, mounted without options, as the reference
		// for what the setuid bit and the device do when allowed.
		kMnt := filepath.Join(base, "kernel")
		kernelOverlay(t, lowers, "", "", kMnt)
		want := expect(true, true, true)
		if b := behaviour(t, helper, kMnt); b != want {
			t.Errorf("kernel overlayfs (read-only, suid, dev):\n got %s\nwant %s", b, want)
		}
		unmount(t, kMnt)
	})
	t.Run("strata -o like fuse-overlayfs", func(t *testing.T) {
		if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
			t.Skip("fuse-overlayfs not installed (scripts/setup.sh installs it)")
		}
		for i, opts := range []string{"", "suid,dev", "nosuid,nodev", "ro", "suid,ro", "nosuid,rw", "dev"} {
			got := map[string]string{}
			for _, impl := range []string{"strata", "fuse-overlayfs"} {
				d := filepath.Join(base, fmt.Sprintf("c%d-%s", i, impl))
				for _, sub := range []string{"upper", "work", "mnt"} {
					os.MkdirAll(filepath.Join(d, sub), 0o755)
				}
				all := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + d + "/upper,workdir=" + d + "/work"
				if opts != "" {
					all += "," + opts
				}
				mnt := filepath.Join(d, "mnt")
				if impl == "strata" {
					startCompat(t, all, mnt)
				} else {
					t.Cleanup(func() { unmount(t, mnt) })
					run(t, 30*time.Second, "fuse-overlayfs", "-o", all, mnt)
				}
				got[impl] = "flags " + mountFlags(t, mnt) + "; " + behaviour(t, helper, mnt)
				unmount(t, mnt)
			}
			if got["strata"] != got["fuse-overlayfs"] {
				t.Errorf("-o %q:\n fuse-overlayfs: %s\n strata:         %s", opts, got["fuse-overlayfs"], got["strata"])
			} else {
				t.Logf("-o %q: both %s", opts, got["strata"])
			}
		}
	})
}
