//go:build integration

package integration

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// A throwaway user

// tuser is a user made for one test (useradd), removed at cleanup with its
// processes, subordinate id ranges and files.
type tuser struct {
	name     string
	uid, gid int
	dir      string // 0755, owned by the user: home, store, mount points
	home     string
	subBase  int // first subordinate uid and gid
	subCount int
	bin      string // a copy of strata the user can execute
}

// subCount is large enough for the busybox fixture's uid 100000.
const userSubCount = 200000

// throwawayUser creates a user, gives it subordinate ids and lets it use
// /dev/fuse (mode 0600 on some machines: set to 0666 for the test, restored
// at cleanup).
func throwawayUser(t *testing.T) *tuser {
	t.Helper()
	requireRoot(t)
	for _, p := range []string{"useradd", "userdel", "setpriv", "fusermount3"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh installs it)", p)
		}
	}
	var b [3]byte
	rand.Read(b[:])
	u := &tuser{name: "strata-t" + hex.EncodeToString(b[:]), subCount: userSubCount}
	dir, err := os.MkdirTemp("/tmp", "strata-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	u.dir, u.home = dir, filepath.Join(dir, "home")
	run(t, 30*time.Second, "useradd", "--home-dir", u.home, "--create-home", "--shell", "/bin/sh", "--user-group", u.name)
	t.Cleanup(func() { u.remove(t) })
	out := run(t, 10*time.Second, "id", "-u", u.name)
	u.uid, _ = strconv.Atoi(strings.TrimSpace(out))
	out = run(t, 10*time.Second, "id", "-g", u.name)
	u.gid, _ = strconv.Atoi(strings.TrimSpace(out))
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	// Subordinate ids: a range of our own, far from the usual ones.
	u.subBase = 10_000_000 + u.uid*userSubCount
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		fh, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(fh, "%s:%d:%d\n", u.name, u.subBase, u.subCount)
		fh.Close()
	}
	// /dev/fuse for a plain user.
	if fi, err := os.Stat("/dev/fuse"); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
		old := fi.Mode().Perm()
		if err := os.Chmod("/dev/fuse", 0o666); err != nil {
			t.Fatal(err)
		}
		t.Logf("/dev/fuse was %o: 0666 for this test", old)
		t.Cleanup(func() { os.Chmod("/dev/fuse", old) })
	}
	u.bin = filepath.Join(dir, "strata-bin")
	copyFile(t, strataBin, u.bin, 0o755)
	return u
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dst, mode)
}

// remove ends what the user left running (by pid), then deletes the user,
// its subordinate ranges and its files.
func (u *tuser) remove(t *testing.T) {
	for _, m := range mounts() {
		if strings.HasPrefix(m.Point, u.dir+"/") {
			t.Errorf("mount %s (%s) outlived the test", m.Point, m.FSType)
			runErr(10*time.Second, "umount", "-l", m.Point)
		}
	}
	for i := 0; i < 3; i++ {
		pids := u.pids()
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if out, err := runErr(30*time.Second, "userdel", u.name); err != nil {
		t.Logf("userdel %s: %v %s", u.name, err, out)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var keep []string
		for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
			if !strings.HasPrefix(l, u.name+":") {
				keep = append(keep, l)
			}
		}
		s := strings.Join(keep, "\n")
		if s != "" {
			s += "\n"
		}
		os.WriteFile(f, []byte(s), 0o644)
	}
	// Files a user namespace gave subordinate owners need root to go.
	os.RemoveAll(u.dir)
}

// pids lists the processes running as the user.
func (u *tuser) pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == u.uid {
			out = append(out, pid)
		}
	}
	return out
}

// env is the user's environment: its own store under XDG_DATA_HOME.
func (u *tuser) env(extra ...string) []string {
	return append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + u.home, "USER=" + u.name, "LOGNAME=" + u.name,
		"XDG_DATA_HOME=" + filepath.Join(u.dir, "data"),
		"XDG_RUNTIME_DIR=" + filepath.Join(u.dir, "run"),
		"LANG=C.UTF-8",
	}, extra...)
}

// cmd prepares name args as the user (setpriv: no capabilities, its groups).
func (u *tuser) cmd(caps bool, name string, args ...string) *exec.Cmd {
	sp := []string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups"}
	if caps {
		// Read everything the mount shows whatever its mode says (a
		// listing of the tree as presented), still as the user the
		// FUSE mount admits.
		sp = append(sp, "--inh-caps=+dac_read_search,+dac_override", "--ambient-caps=+dac_read_search,+dac_override")
	}
	c := exec.Command("setpriv", append(append(sp, "--", name), args...)...)
	c.Env = u.env()
	c.Dir = u.dir
	return c
}

// run runs a command as the user and returns its combined output; errors
// fail the test.
func (u *tuser) run(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := u.try(timeout, name, args...)
	if err != nil {
		t.Fatalf("as %s: %s %s: %v\n%s", u.name, name, strings.Join(args, " "), err, out)
	}
	return out
}

func (u *tuser) try(timeout time.Duration, name string, args ...string) (string, error) {
	return u.tryCmd(u.cmd(false, name, args...), timeout)
}

func (u *tuser) tryCmd(c *exec.Cmd, timeout time.Duration) (string, error) {
	var buf strings.Builder
	c.Stdout, c.Stderr = &buf, &buf
	if err := c.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return buf.String(), err
	case <-time.After(timeout):
		c.Process.Kill()
		<-done
		return buf.String(), fmt.Errorf("timed out after %v", timeout)
	}
}

// strata runs the user's strata.
func (u *tuser) strata(t testing.TB, args ...string) string {
	t.Helper()
	return u.run(t, 2*time.Minute, u.bin, args...)
}

// mountDir makes a mount point owned by the user and unmounts it at cleanup.
func (u *tuser) mountDir(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join(u.dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(d, u.uid, u.gid)
	t.Cleanup(func() {
		if isMounted(d) {
			u.try(30*time.Second, "fusermount3", "-u", d)
		}
		unmount(t, d)
	})
	return d
}

// manifest lists dir as the user sees it, every file readable.
func (u *tuser) manifest(t testing.TB, dir string) []string {
	t.Helper()
	if sharedDir == "" {
		t.Fatal("../shared/fixtures/tree-manifest.py not found (set STRATA_SHARED)")
	}
	c := u.cmd(true, "python3", filepath.Join(sharedDir, "fixtures", "tree-manifest.py"), dir, "--no-dir-mtime")
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("tree-manifest.py %s as %s: %v\n%s", dir, u.name, err, stderr.String())
	}
	s := strings.TrimRight(stdout.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// ---------------------------------------------------------------------------
// Manifest lines

// mline is one tree-manifest.py line.
type mline struct {
	path, typ, mode, owner, size, extra, xattrs, mtime, hl string
}

var mlineRE = regexp.MustCompile(`^(.*?) ([fdlcbps?]) ([0-7]+) (\d+:\d+) (\d+) (.*) (\S+) (\S+)$`)

func parseMline(s string) mline {
	var m mline
	if i := strings.LastIndex(s, " hl="); i >= 0 {
		s, m.hl = s[:i], s[i+1:]
	}
	g := mlineRE.FindStringSubmatch(s)
	if g == nil {
		return mline{path: s}
	}
	m.path, m.typ, m.mode, m.owner, m.size, m.extra, m.xattrs, m.mtime = g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8]
	return m
}

func (m mline) String() string {
	s := strings.Join([]string{m.path, m.typ, m.mode, m.owner, m.size, m.extra, m.xattrs, m.mtime}, " ")
	if m.hl != "" {
		s += " " + m.hl
	}
	return s
}

// mapXattrs rewrites the xattr list of m: f returns the new name and value,
// or keep false to drop the xattr.
func (m *mline) mapXattrs(f func(name, hexval string) (string, string, bool)) {
	if m.xattrs == "-" || strings.HasPrefix(m.xattrs, "ERR:") {
		return
	}
	var out []string
	for _, kv := range strings.Split(m.xattrs, ",") {
		n, v, _ := strings.Cut(kv, "=")
		if n, v, ok := f(n, v); ok {
			out = append(out, n+"="+v)
		}
	}
	sort.Strings(out)
	m.xattrs = strings.Join(out, ",")
	if m.xattrs == "" {
		m.xattrs = "-"
	}
}

// decodeOverrideXattrs shows a tree read through a reader that does not
// decode the rootless records (fuse-overlayfs 1.10) as strata shows it: no
// override_stat, user.containers.override_NAME as NAME.
func decodeOverrideXattrs(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		m := parseMline(l)
		m.mapXattrs(func(n, v string) (string, string, bool) {
			switch {
			case n == "user.containers.override_stat", strings.HasPrefix(n, "user.fuseoverlayfs."):
				return "", "", false
			case strings.HasPrefix(n, "user.containers.override_"):
				return strings.TrimPrefix(n, "user.containers.override_"), v, true
			}
			return n, v, true
		})
		out[i] = m.String()
	}
	return out
}

// rootlessOwners shows a `umoci unpack --rootless` tree with the owners it
// recorded in user.rootlesscontainers (a protobuf: uid = field 1, gid =
// field 2, absent or 0xFFFFFFFF = 0) instead of the unpacking user, and without that xattr.
func rootlessOwners(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		m := parseMline(l)
		uid, gid := 0, 0
		m.mapXattrs(func(n, v string) (string, string, bool) {
			if n != "user.rootlesscontainers" {
				return n, v, true
			}
			b, _ := hex.DecodeString(v)
			for len(b) > 0 {
				tag := b[0]
				b = b[1:]
				val, n := 0, 0
				for shift := 0; n < len(b); shift += 7 {
					c := b[n]
					n++
					val |= int(c&0x7f) << shift
					if c < 0x80 {
						break
					}
				}
				b = b[n:]
				switch tag {
				case 0x08:
					uid = val
				case 0x10:
					gid = val
				}
			}
			return "", "", false
		})
		// 0xFFFFFFFF is the spec's "no id recorded": the unpacking user, the container's root.
		if uid == 0xFFFFFFFF {
			uid = 0
		}
		if gid == 0xFFFFFFFF {
			gid = 0
		}
		m.owner = fmt.Sprintf("%d:%d", uid, gid)
		out[i] = m.String()
	}
	return out
}

// manifestDiff compares two manifests line by line by path: the paths whose
// lines differ, with both lines.
func manifestDiff(want, got []string) map[string][2]string {
	w := map[string]string{}
	for _, l := range want {
		w[parseMline(l).path] = l
	}
	d := map[string][2]string{}
	seen := map[string]bool{}
	for _, l := range got {
		p := parseMline(l).path
		seen[p] = true
		if w[p] != l {
			d[p] = [2]string{w[p], l}
		}
	}
	for p, l := range w {
		if !seen[p] {
			d[p] = [2]string{l, ""}
		}
	}
	return d
}

func reportDiff(t *testing.T, what string, d map[string][2]string) {
	t.Helper()
	if len(d) == 0 {
		return
	}
	var ps []string
	for p := range d {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	var b strings.Builder
	for i, p := range ps {
		if i == 30 {
			fmt.Fprintf(&b, "… %d more\n", len(ps)-i)
			break
		}
		fmt.Fprintf(&b, "- %s\n+ %s\n", d[p][0], d[p][1])
	}
	t.Errorf("%s: %d entries differ:\n%s", what, len(d), b.String())
}

// symlinkOwnersOnly drops from d the symlinks that differ only in owner,
// where got shows the importing user: an unprivileged store cannot record a
// symlink's owner (no user xattrs on symlinks; containers/storage and
// fuse-overlayfs have the same limit). It returns how many it dropped.
func symlinkOwnersOnly(d map[string][2]string, user string) int {
	n := 0
	for p, l := range d {
		w, g := parseMline(l[0]), parseMline(l[1])
		if w.typ == "l" && g.typ == "l" && g.owner == user {
			w.owner = g.owner
			if w.String() == g.String() {
				delete(d, p)
				n++
			}
		}
	}
	return n
}

// ---------------------------------------------------------------------------
// Tests

// A plain user imports the busybox fixture into its own store, mounts it
// through fusermount3 and sees the owners, modes, devices and capabilities
// of the image; writes, looks at the changes, commits, exports, unmounts.
func TestRootlessStore(t *testing.T) {
	requireCommands(t, "import", "images", "mount", "umount", "inspect")
	fx := fixture(t, "busybox")
	u := throwawayUser(t)
	archive := filepath.Join(u.dir, "busybox.tar")
	copyFile(t, filepath.Join(fx, "busybox-docker-archive.tar"), archive, 0o644)

	start := time.Now()
	u.strata(t, "import", archive, "--tag", "bb:1")
	t.Logf("rootless import of the busybox fixture: %v", time.Since(start).Round(time.Millisecond))
	store := filepath.Join(u.dir, "data", "strata")
	if _, err := os.Stat(filepath.Join(store, "layers")); err != nil {
		t.Fatalf("the store is not under $XDG_DATA_HOME/strata: %v", err)
	}
	if out := u.strata(t, "images"); !strings.Contains(out, "bb") {
		t.Fatalf("strata images does not list bb:1:\n%s", out)
	}

	mnt := u.mountDir(t, "mnt")
	start = time.Now()
	u.strata(t, "mount", "bb:1", mnt)
	t.Logf("rootless mount: %v", time.Since(start).Round(time.Millisecond))
	m, ok := mountAt(mnt)
	if !ok || m.FSType != "fuse.strata" {
		t.Fatalf("%s: not a fuse.strata mount (%+v)", mnt, m)
	}
	logs, _ := filepath.Glob(filepath.Join(store, "logs", "mount-*.log"))
	var logText string
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		logText += string(b)
	}
	if !strings.Contains(logText, "passthrough off") || strings.Contains(logText, "level=error") {
		t.Errorf("the mount log should say once that passthrough is off, with no error:\n%s", logText)
	}

	// The tree as presented, against umoci's unpack as root.
	start = time.Now()
	got := u.manifest(t, mnt)
	t.Logf("listing the mount (%d entries): %v", len(got), time.Since(start).Round(time.Millisecond))
	ref := treeManifest(t, filepath.Join(fx, "busybox-reference", "rootfs"))
	d := manifestDiff(ref, got)
	user := fmt.Sprintf("%d:%d", u.uid, u.gid)
	n := symlinkOwnersOnly(d, user)
	t.Logf("%d entries equal to umoci's unpack as root; %d symlinks show the importing user as owner", len(got)-n, n)
	reportDiff(t, "rootless mount vs umoci unpack (root)", d)

	// And against `umoci unpack --rootless`, with the owners it records.
	if _, err := exec.LookPath("umoci"); err == nil {
		oci := filepath.Join(u.dir, "oci")
		run(t, 2*time.Minute, "cp", "-a", filepath.Join(fx, "busybox-oci"), oci)
		run(t, 30*time.Second, "chown", "-R", fmt.Sprintf("%d:%d", u.uid, u.gid), oci)
		tag := ociTag(t, oci)
		start = time.Now()
		u.run(t, 5*time.Minute, "umoci", "unpack", "--rootless", "--image", oci+":"+tag, filepath.Join(u.dir, "bundle"))
		t.Logf("umoci unpack --rootless: %v", time.Since(start).Round(time.Millisecond))
		ur := rootlessOwners(u.manifest(t, filepath.Join(u.dir, "bundle", "rootfs")))
		d := manifestDiff(ur, got)
		// umoci --rootless loses what strata keeps: devices (empty
		// files there), security.* xattrs, and symlinks it shows as
		// root's (we show the user). Those must match the root unpack.
		refBy := map[string]string{}
		for _, l := range ref {
			refBy[parseMline(l).path] = l
		}
		lossy := 0
		for p, l := range d {
			w, g := parseMline(l[0]), parseMline(l[1])
			devLoss := (g.typ == "c" || g.typ == "b") && w.typ == "f"
			capLoss := strings.Contains(g.xattrs, "security.")
			linkOwner := w.typ == "l" && g.typ == "l" && g.owner == user
			if (devLoss || capLoss || linkOwner) && (refBy[p] == l[1] || linkOwner) {
				delete(d, p)
				lossy++
			}
		}
		t.Logf("umoci --rootless: %d entries equal, %d where it loses what strata keeps (devices, security xattrs, symlink owners)", len(got)-lossy-len(d), lossy)
		reportDiff(t, "rootless mount vs umoci unpack --rootless", d)
	} else {
		t.Log("umoci not installed: the --rootless comparison is skipped")
	}

	// The presented modes are enforced for the user.
	if _, err := u.try(10*time.Second, "cat", filepath.Join(mnt, "special/mode-000")); err == nil {
		t.Error("the user could read special/mode-000 (0000, root's)")
	}
	if out, err := u.try(10*time.Second, "cat", filepath.Join(mnt, "etc/passwd")); err != nil {
		t.Errorf("cat etc/passwd: %v %s", err, out)
	}

	// Writes: the user can write where the image lets it (/tmp is 1777).
	u.run(t, 30*time.Second, "sh", "-c", `set -e; cd "$1"; echo hello > tmp/new; chmod 4755 tmp/new; mkdir tmp/dir; mkfifo tmp/fifo; ln -s new tmp/link`, "sh", mnt)
	if _, err := u.try(10*time.Second, "rm", filepath.Join(mnt, "data/hello.txt")); err == nil {
		t.Error("the user removed data/hello.txt from a root-owned directory")
	}
	out := u.run(t, 10*time.Second, "stat", "-c", "%u:%g %a %F", filepath.Join(mnt, "tmp/new"), filepath.Join(mnt, "tmp"))
	if want := user + " 4755 regular file\n0:0 1777 directory\n"; out != want {
		t.Errorf("after the writes: %q, want %q", out, want)
	}
	if commandSet["diff"] {
		out := u.strata(t, "diff", mnt)
		for _, want := range []string{"A /tmp/new", "A /tmp/dir", "C /tmp"} {
			if !strings.Contains(out, want) {
				t.Errorf("strata diff lacks %q:\n%s", want, out)
			}
		}
	}
	if commandSet["which"] {
		if out := u.strata(t, "which", filepath.Join(mnt, "etc/passwd")); !strings.Contains(out, "layer") && !strings.Contains(out, "/etc/passwd") {
			t.Errorf("strata which etc/passwd: %s", out)
		}
	}
	if commandSet["commit"] && commandSet["export"] {
		u.strata(t, "commit", mnt, "bb:2")
		exp := filepath.Join(u.dir, "bb2.tar")
		u.strata(t, "export", "bb:2", exp)
		hdrs := lastLayerHeaders(t, exp)
		if h := hdrs["tmp/new"]; h == nil || h.Uid != u.uid || h.Gid != u.gid || h.Mode&0o7777 != 0o4755 {
			t.Errorf("exported layer: tmp/new %+v, want %s mode 4755", h, user)
		}
		if h := hdrs["tmp/"]; h == nil || h.Uid != 0 || h.Mode&0o7777 != 0o1777 {
			t.Errorf("exported layer: tmp/ %+v, want 0:0 mode 1777", h)
		}
		if h := hdrs["tmp/fifo"]; h == nil || h.Typeflag != tar.TypeFifo {
			t.Errorf("exported layer: tmp/fifo %+v", h)
		}
		// The committed image mounts with the new layer's owners.
		mnt2 := u.mountDir(t, "mnt-committed")
		u.strata(t, "mount", "bb:2", mnt2, "--read-only")
		out := u.run(t, 10*time.Second, "stat", "-c", "%u:%g %a", filepath.Join(mnt2, "tmp/new"), filepath.Join(mnt2, "usr/local/bin/suid-busybox"))
		if !strings.HasPrefix(out, user+" 4755\n0:0 ") {
			t.Errorf("committed image: %q", out)
		}
		u.strata(t, "umount", mnt2)
	} else {
		t.Log("strata commit/export not built: skipped")
	}
	u.strata(t, "umount", mnt)
	if isMounted(mnt) {
		t.Fatalf("%s still mounted after strata umount", mnt)
	}
}

// ID mapping: the image's root shown as the user, its other ids as the
// user's subordinate range; inside a user namespace with that mapping the
// image's owners are the container's, and chown records container ids.
func TestRootlessIDMapping(t *testing.T) {
	requireCommands(t, "import", "mount", "umount")
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	fx := fixture(t, "busybox")
	u := throwawayUser(t)
	archive := filepath.Join(u.dir, "busybox.tar")
	copyFile(t, filepath.Join(fx, "busybox-docker-archive.tar"), archive, 0o644)
	u.strata(t, "import", archive, "--tag", "bb:1")
	mnt := u.mountDir(t, "mnt")
	up := filepath.Join(u.dir, "upper")
	sub := u.subCount - 1
	u.strata(t, "mount", "bb:1", mnt, "--upper", up,
		"--uidmap", fmt.Sprintf("0:%d:1", u.uid), "--uidmap", fmt.Sprintf("1:%d:%d", u.subBase, sub),
		"--gidmap", fmt.Sprintf("0:%d:1:1:%d:%d", u.gid, u.subBase, sub))
	out := u.run(t, 10*time.Second, "stat", "-c", "%u:%g", filepath.Join(mnt, "etc/passwd"), filepath.Join(mnt, "data/hello.txt"), filepath.Join(mnt, "special/uid-100000"))
	want := fmt.Sprintf("%d:%d\n%d:%d\n%d:%d\n", u.uid, u.gid, u.subBase+999, u.subBase+999, u.subBase+99999, u.subBase+99999)
	if out != want {
		t.Errorf("presented owners %q, want %q", out, want)
	}
	// The user is the image's root now: it may write root's files.
	u.run(t, 10*time.Second, "sh", "-c", `echo more >> "$1/etc/passwd"`, "sh", mnt)
	// In a user namespace mapped the same way, chown works as in a container.
	if _, err := u.try(10*time.Second, "unshare", "--map-root-user", "true"); err != nil {
		t.Skipf("user namespaces unavailable to a plain user: %v", err)
	}
	script := `set -e; cd "$1"; stat -c %u:%g etc/passwd data/hello.txt; chown 1234:1235 data/hello.txt; touch tmp/byroot; chown 5:6 tmp/byroot; stat -c %u:%g data/hello.txt tmp/byroot`
	out = u.run(t, 30*time.Second, "unshare", "--map-root-user",
		fmt.Sprintf("--map-users=%d,1,%d", u.subBase, sub), fmt.Sprintf("--map-groups=%d,1,%d", u.subBase, sub),
		"sh", "-c", script, "sh", mnt)
	if want := "0:0\n1000:1000\n1234:1235\n5:6\n"; out != want {
		t.Errorf("inside the user namespace: %q, want %q", out, want)
	}
	out = u.run(t, 10*time.Second, "stat", "-c", "%u:%g", filepath.Join(mnt, "data/hello.txt"))
	if want := fmt.Sprintf("%d:%d\n", u.subBase+1233, u.subBase+1234); out != want {
		t.Errorf("outside: %q, want %q", out, want)
	}
	for p, want := range map[string]string{"data/hello.txt": "1234:1235:0644", "tmp/byroot": "5:6:0644"} {
		got := xattrValue(filepath.Join(up, p), "user.containers.override_stat")
		if got != want {
			t.Errorf("upper %s: override %q, want %q (container ids)", p, got, want)
		}
	}
	u.strata(t, "umount", mnt)
}

func xattrValue(p, name string) string {
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(p, name, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func ociTag(t testing.TB, layout string) string {
	t.Helper()
	var idx struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	for _, m := range idx.Manifests {
		if r := m.Annotations["org.opencontainers.image.ref.name"]; r != "" {
			return r
		}
	}
	return "latest"
}

// lastLayerHeaders reads the top layer of a docker-archive.
func lastLayerHeaders(t testing.TB, archive string) map[string]*tar.Header {
	t.Helper()
	read := func(name string) []byte {
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if err != nil {
				t.Fatalf("%s in %s: %v", name, archive, err)
			}
			if h.Name == name {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
	}
	var man []struct{ Layers []string }
	if err := json.Unmarshal(read("manifest.json"), &man); err != nil || len(man) == 0 || len(man[0].Layers) == 0 {
		t.Fatalf("manifest.json of %s: %v", archive, err)
	}
	layer := read(man[0].Layers[len(man[0].Layers)-1])
	out := map[string]*tar.Header{}
	tr := tar.NewReader(strings.NewReader(string(layer)))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		out[h.Name] = h
	}
	return out
}

// A rootless strata store is read by fuse-overlayfs (xattr_permissions=2)
// with the same owners and modes, and uppers go both ways: one written by a
// rootless fuse-overlayfs is mounted by strata, and one written by strata is
// continued by fuse-overlayfs.
func TestRootlessFuseOverlayfsInterop(t *testing.T) {
	requireCommands(t, "import", "mount", "umount", "inspect")
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		t.Skip("fuse-overlayfs not installed (scripts/setup.sh installs it)")
	}
	fx := fixture(t, "busybox")
	u := throwawayUser(t)
	archive := filepath.Join(u.dir, "busybox.tar")
	copyFile(t, filepath.Join(fx, "busybox-docker-archive.tar"), archive, 0o644)
	u.strata(t, "import", archive, "--tag", "bb:1")
	var info struct {
		Lowerdir string `json:"lowerdir"`
	}
	if err := json.Unmarshal([]byte(u.strata(t, "inspect", "bb:1")), &info); err != nil || info.Lowerdir == "" {
		t.Fatalf("strata inspect: %v", err)
	}
	mkdirs := func(ps ...string) {
		for _, p := range ps {
			os.MkdirAll(p, 0o755)
			os.Chown(p, u.uid, u.gid)
		}
	}

	// The store's layers, through strata and through fuse-overlayfs.
	smnt := u.mountDir(t, "strata")
	u.strata(t, "mount", "bb:1", smnt, "--read-only")
	viaStrata := u.manifest(t, smnt)
	fmnt := u.mountDir(t, "fuse-overlayfs")
	fup, fwork := filepath.Join(u.dir, "fo-upper"), filepath.Join(u.dir, "fo-work")
	mkdirs(fup, fwork)
	u.run(t, 30*time.Second, "fuse-overlayfs", "-o", "lowerdir="+info.Lowerdir+",upperdir="+fup+",workdir="+fwork+",xattr_permissions=2", fmnt)
	viaFO := decodeOverrideXattrs(u.manifest(t, fmnt))
	d := manifestDiff(viaStrata, viaFO)
	devs := 0
	for p, l := range d {
		// fuse-overlayfs 1.10 reads UID:GID:MODE but not the TYPE
		// field: devices and fifos show as the empty files they are.
		w, g := parseMline(l[0]), parseMline(l[1])
		if (w.typ == "c" || w.typ == "b" || w.typ == "p") && g.typ == "f" && g.size == "0" && w.mode == g.mode && w.owner == g.owner {
			delete(d, p)
			devs++
		}
	}
	t.Logf("strata store via fuse-overlayfs xattr_permissions=2: %d entries with the same owners and modes; %d devices/fifos shown as plain files by this fuse-overlayfs", len(viaFO)-devs-len(d), devs)
	reportDiff(t, "strata store: strata vs fuse-overlayfs", d)

	// An upper written by rootless fuse-overlayfs, mounted by strata.
	u.run(t, 30*time.Second, "sh", "-c", `set -e; cd "$1/tmp"; echo fo > fofile; chmod 4711 fofile; mkdir fodir; echo x > fodir/inner`, "sh", fmnt)
	foTmp := filterPrefix(decodeOverrideXattrs(u.manifest(t, fmnt)), "tmp/")
	u.run(t, 30*time.Second, "fusermount3", "-u", fmnt)
	u.strata(t, "-o", "lowerdir="+info.Lowerdir+",upperdir="+fup+",workdir="+fwork+",xattr_permissions=2", fmnt)
	stTmp := filterPrefix(u.manifest(t, fmnt), "tmp/")
	reportDiff(t, "fuse-overlayfs upper: fuse-overlayfs vs strata", manifestDiff(foTmp, stTmp))
	u.run(t, 30*time.Second, "fusermount3", "-u", fmnt)

	// An upper written by rootless strata, continued by fuse-overlayfs.
	sup := filepath.Join(u.dir, "st-upper")
	u.strata(t, "umount", smnt)
	u.strata(t, "mount", "bb:1", smnt, "--upper", sup)
	u.run(t, 30*time.Second, "sh", "-c", `set -e; cd "$1/tmp"; echo st > stfile; chmod 2750 stfile; mkdir stdir; echo y > stdir/inner; ln -s stfile stlink`, "sh", smnt)
	stView := filterPrefix(u.manifest(t, smnt), "tmp/")
	u.strata(t, "umount", smnt)
	swork := filepath.Join(u.dir, ".st-upper.work") // strata mount --upper keeps its work dir beside it
	u.run(t, 30*time.Second, "fuse-overlayfs", "-o", "lowerdir="+info.Lowerdir+",upperdir="+sup+",workdir="+swork, fmnt)
	foView := filterPrefix(decodeOverrideXattrs(u.manifest(t, fmnt)), "tmp/")
	reportDiff(t, "strata upper: strata vs fuse-overlayfs", manifestDiff(stView, foView))
	u.run(t, 30*time.Second, "fusermount3", "-u", fmnt)
}

func filterPrefix(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}
