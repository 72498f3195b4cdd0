//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Set once by TestMain.
var (
	repoRoot   string // the clone: holds go.mod
	sharedDir  string // ../shared beside the clone (DESIGN.md, fixtures/); may be ""
	strataBin  string // the binary built for this run
	skipReason string // non-empty: every test skips with it (not root, no /dev/fuse)
	commandSet map[string]bool
)

// defaultTimeout bounds one strata invocation.
const defaultTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	var err error
	if repoRoot, err = findRepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	sharedDir = findShared()
	switch {
	case os.Geteuid() != 0:
		skipReason = "integration tests need root (mount, mknod, chown): run `sudo make test`"
	case !isCharDevice("/dev/fuse"):
		skipReason = "integration tests need /dev/fuse (modprobe fuse; apt-get install fuse3)"
	}
	if skipReason != "" {
		fmt.Fprintln(os.Stderr, "integration: SKIPPING ALL:", skipReason)
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "strata-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	strataBin = filepath.Join(tmp, "strata")
	build := exec.Command(goTool(), "build", "-o", strataBin, "./cmd/strata")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: building strata: %v\n%s", err, out)
		return 1
	}
	commandSet = listCommands()

	// Every t.TempDir (stores, mount points) lives under one base, so that a
	// mount that outlived its test is found, reported and removed here.
	base, err := os.MkdirTemp("", "strata-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	os.Setenv("TMPDIR", base)
	code := m.Run()
	if stale := mountsUnder(base); len(stale) > 0 {
		fmt.Fprintf(os.Stderr, "integration: FAIL: %d mount(s) outlived their tests:\n", len(stale))
		for i := len(stale) - 1; i >= 0; i-- {
			fmt.Fprintf(os.Stderr, "  %s (%s)\n", stale[i].Point, stale[i].FSType)
			exec.Command("umount", "-l", stale[i].Point).Run()
		}
		code = 1
	}
	if len(mountsUnder(base)) == 0 {
		os.RemoveAll(base)
	}
	return code
}

// mountsUnder lists the mounts whose mount point is below dir, in mount order.
func mountsUnder(dir string) []mountInfo {
	var out []mountInfo
	for _, m := range mounts() {
		if strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m)
		}
	}
	return out
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func findRepoRoot() (string, error) {
	// go test runs in the package directory: the repo root is its parent.
	if wd, err := os.Getwd(); err == nil {
		for d := wd; d != "/"; d = filepath.Dir(d) {
			if fileExists(filepath.Join(d, "go.mod")) {
				return d, nil
			}
		}
	}
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("cannot find the repository root: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func findShared() string {
	for _, d := range []string{os.Getenv("STRATA_SHARED"), filepath.Join(repoRoot, "..", "shared"), "/work/shared"} {
		if d != "" && fileExists(filepath.Join(d, "fixtures", "tree-manifest.py")) {
			abs, _ := filepath.Abs(d)
			return abs
		}
	}
	return ""
}

// listCommands asks `strata help` which subcommands exist, so that tests of a
// command that is not built yet skip with a message instead of failing.
func listCommands() map[string]bool {
	set := map[string]bool{}
	out, _ := exec.Command(strataBin, "help").CombinedOutput()
	sc := bufio.NewScanner(bytes.NewReader(out))
	inCommands := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "commands:") {
			inCommands = true
			continue
		}
		if f := strings.Fields(line); inCommands && len(f) > 0 {
			set[f[0]] = true
		}
	}
	return set
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func isCharDevice(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// requireRoot skips the test when the machine cannot run integration tests.
func requireRoot(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// requireCommands skips the test while a strata subcommand it drives is not built yet.
func requireCommands(t testing.TB, names ...string) {
	t.Helper()
	requireRoot(t)
	for _, n := range names {
		if !commandSet[n] {
			t.Skipf("strata %s is not built yet", n)
		}
	}
}

// ---------------------------------------------------------------------------
// Running the binary

// result is one strata invocation.
type result struct {
	Args   []string
	Stdout string
	Stderr string
	Code   int // exit code; -1 when killed by the timeout or a signal
}

func (r result) String() string {
	return fmt.Sprintf("strata %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

var (
	rootsMu sync.Mutex
	roots   = map[testing.TB]string{}
)

// storeRoot is the test's own store (--root), made on first use.
func storeRoot(t testing.TB) string {
	t.Helper()
	rootsMu.Lock()
	defer rootsMu.Unlock()
	if r, ok := roots[t]; ok {
		return r
	}
	r := filepath.Join(t.TempDir(), "store")
	roots[t] = r
	t.Cleanup(func() { rootsMu.Lock(); delete(roots, t); rootsMu.Unlock() })
	return r
}

// strata runs the binary with the test's store and the default timeout.
func strata(t testing.TB, args ...string) result {
	t.Helper()
	return strataIn(t, storeRoot(t), defaultTimeout, args...)
}

// mustStrata is strata that fails the test unless the exit code is 0.
func mustStrata(t testing.TB, args ...string) result {
	t.Helper()
	r := strata(t, args...)
	if r.Code != 0 {
		t.Fatalf("%v", r)
	}
	return r
}

// strataIn runs the binary against the store at root with a timeout. Output
// goes to files, not pipes, so that a daemon that keeps them open (strata
// mount) does not hold up the wait.
func strataIn(t testing.TB, root string, timeout time.Duration, args ...string) result {
	t.Helper()
	return strataExec(t, timeout, append([]string{"--root", root}, args...)...)
}

// strataExec runs the binary with exactly these arguments (no --root: the
// fuse-overlayfs compatible `strata -o ...` form takes none).
func strataExec(t testing.TB, timeout time.Duration, full ...string) result {
	t.Helper()
	requireRoot(t)
	args := full
	if len(full) >= 2 && full[0] == "--root" {
		args = full[2:]
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.CommandContext(ctx, strataBin, full...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), "STRATA_ROOT=")
	start := time.Now()
	err = cmd.Run()
	r := result{Args: args, Code: cmd.ProcessState.ExitCode()}
	o, _ := os.ReadFile(stdout.Name())
	e, _ := os.ReadFile(stderr.Name())
	r.Stdout, r.Stderr = string(o), string(e)
	if ctx.Err() != nil {
		t.Fatalf("strata %s: timed out after %v\n%v", strings.Join(args, " "), timeout, r)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("strata %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("strata %s: exit %d in %v", strings.Join(args, " "), r.Code, time.Since(start).Round(time.Millisecond))
	return r
}

// run runs any program with a timeout and returns its combined output; it
// fails the test on a non-zero exit.
func run(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runErr(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return string(out), err
}

// ---------------------------------------------------------------------------
// Mounts

// mount runs `strata mount REF DIR extra...` and registers a cleanup that
// unmounts DIR (with a timeout), so that no stale mount survives a failed test.
func mount(t testing.TB, ref, dir string, extra ...string) result {
	t.Helper()
	requireCommands(t, "mount")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	r := strata(t, append([]string{"mount", ref, dir}, extra...)...)
	if r.Code != 0 {
		t.Fatalf("%v", r)
	}
	if !isMounted(dir) {
		t.Fatalf("strata mount returned 0 but %s is not a mount point\n%v", dir, r)
	}
	return r
}

// unmount removes every mount at dir: fusermount3 -u (FUSE) or umount, then a
// lazy umount as the last resort. Safe to call when nothing is mounted.
func unmount(t testing.TB, dir string) {
	t.Helper()
	for i := 0; i < 8 && isMounted(dir); i++ {
		var err error
		var out string
		switch {
		case i < 2 && isFuseMount(dir):
			out, err = runErr(10*time.Second, "fusermount3", "-u", dir)
		case i < 4:
			out, err = runErr(10*time.Second, "umount", dir)
		default:
			out, err = runErr(10*time.Second, "umount", "-l", dir)
		}
		if err != nil {
			t.Logf("unmounting %s (try %d): %v %s", dir, i+1, err, strings.TrimSpace(out))
			time.Sleep(200 * time.Millisecond)
		}
	}
	if isMounted(dir) {
		t.Errorf("could not unmount %s", dir)
	}
}

type mountInfo struct {
	Point  string
	FSType string
	Source string
}

// mounts parses /proc/self/mountinfo.
func mounts() []mountInfo {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var ms []mountInfo
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		ms = append(ms, mountInfo{Point: unescapeMount(f[4]), FSType: f[sep+1], Source: unescapeMount(f[sep+2])})
	}
	return ms
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func mountAt(dir string) (mountInfo, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return mountInfo{}, false
	}
	var found mountInfo
	ok := false
	for _, m := range mounts() {
		if m.Point == abs {
			found, ok = m, true // the last one is the topmost
		}
	}
	return found, ok
}

func isMounted(dir string) bool { _, ok := mountAt(dir); return ok }

func isFuseMount(dir string) bool {
	m, ok := mountAt(dir)
	return ok && strings.HasPrefix(m.FSType, "fuse")
}

// kernelOverlay mounts the kernel's overlayfs at mnt. lowers are top-first,
// as in lowerdir=. With upper == "" the mount is read-only (a single lower is
// then bind-mounted read-only, since overlayfs needs two lowers without an
// upper). The mount is removed at cleanup.
func kernelOverlay(t testing.TB, lowers []string, upper, work, mnt string, extraOpts ...string) {
	t.Helper()
	requireRoot(t)
	if len(lowers) == 0 {
		t.Fatal("kernelOverlay: no lower dirs")
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	if upper == "" && len(lowers) == 1 {
		run(t, 30*time.Second, "mount", "--bind", "-o", "ro", lowers[0], mnt)
		run(t, 30*time.Second, "mount", "-o", "remount,bind,ro", mnt)
		return
	}
	for _, d := range append(append([]string{}, lowers...), upper, work) {
		if strings.ContainsAny(d, ",:") {
			t.Fatalf("kernelOverlay: path %q holds ',' or ':'", d)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if upper != "" {
		if work == "" {
			t.Fatal("kernelOverlay: upper without work")
		}
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	for _, o := range extraOpts {
		opts += "," + o
	}
	run(t, 30*time.Second, "mount", "-t", "overlay", "overlay", "-o", opts, mnt)
}

// fuseOverlayfs mounts fuse-overlayfs, the peer implementation, like kernelOverlay.
func fuseOverlayfs(t testing.TB, lowers []string, upper, work, mnt string) {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		t.Skip("fuse-overlayfs not installed (scripts/setup.sh installs it)")
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if upper != "" {
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	run(t, 30*time.Second, "fuse-overlayfs", "-o", opts, mnt)
}

// ---------------------------------------------------------------------------
// Fixtures

var (
	fixtureMu   sync.Mutex
	fixtureDirs = map[string]string{}
)

// fixture returns the directory holding NAME-docker-archive.tar, NAME-oci/, …,
// NAME-reference/rootfs for the shared fixture image NAME (busybox, debian).
// It looks in $STRATA_FIXTURES/NAME, /tmp/strata-fixtures/NAME and
// /tmp/fusefixture/NAME, and builds it with scripts/fixtures.sh (which runs
// ../shared/fixtures/make-NAME-image.sh) when none is complete.
func fixture(t testing.TB, name string) string {
	t.Helper()
	requireRoot(t)
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if d, ok := fixtureDirs[name]; ok {
		return d
	}
	var candidates []string
	if env := os.Getenv("STRATA_FIXTURES"); env != "" {
		candidates = append(candidates, filepath.Join(env, name))
	}
	candidates = append(candidates, filepath.Join("/tmp/strata-fixtures", name), filepath.Join("/tmp/fusefixture", name))
	for _, d := range candidates {
		if fixtureComplete(d, name) {
			fixtureDirs[name] = d
			return d
		}
	}
	if sharedDir == "" {
		t.Fatalf("fixture %s: not built and ../shared/fixtures not found (set STRATA_SHARED)", name)
	}
	cache := os.Getenv("STRATA_FIXTURES")
	if cache == "" {
		cache = "/tmp/strata-fixtures"
	}
	t.Logf("fixture %s: building into %s (busybox ~20 s, debian ~60 s)", name, cache)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "scripts", "fixtures.sh"), name)
	cmd.Env = append(os.Environ(), "STRATA_FIXTURES="+cache, "STRATA_SHARED="+sharedDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building fixture %s: %v\n%s", name, err, out)
	}
	d := filepath.Join(cache, name)
	if !fixtureComplete(d, name) {
		t.Fatalf("fixture %s: built but incomplete in %s", name, d)
	}
	fixtureDirs[name] = d
	return d
}

func fixtureComplete(d, name string) bool {
	for _, p := range []string{
		name + "-docker-archive.tar",
		name + "-oci-archive.tar",
		name + "-oci/index.json",
		name + "-oci-uncompressed/index.json",
		name + "-oci-zstd/index.json",
		name + "-oci-mislabeled/index.json",
		name + "-reference/rootfs",
	} {
		if !fileExists(filepath.Join(d, p)) {
			return false
		}
	}
	return true
}

// treeManifest lists dir with ../shared/fixtures/tree-manifest.py
// --no-dir-mtime: one canonical line per entry (type, mode, owner, size,
// content hash, link target, rdev, xattrs, mtime, hard-link group).
func treeManifest(t testing.TB, dir string) []string {
	t.Helper()
	return runTreeManifest(t, dir, "--no-dir-mtime")
}

// treeManifestFull is treeManifest with directory mtimes.
func treeManifestFull(t testing.TB, dir string) []string {
	t.Helper()
	return runTreeManifest(t, dir)
}

func runTreeManifest(t testing.TB, dir string, flags ...string) []string {
	t.Helper()
	if sharedDir == "" {
		t.Fatal("treeManifest: ../shared/fixtures/tree-manifest.py not found (set STRATA_SHARED)")
	}
	args := append([]string{filepath.Join(sharedDir, "fixtures", "tree-manifest.py"), dir}, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tree-manifest.py %s: %v\n%s", dir, err, stderr.String())
	}
	s := strings.TrimRight(string(out), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// diffLines is a small line diff for test failures: lines only in a ("-")
// and only in b ("+"), in order, at most max of them.
func diffLines(a, b []string, max int) string {
	inB := make(map[string]int, len(b))
	for _, l := range b {
		inB[l]++
	}
	inA := make(map[string]int, len(a))
	for _, l := range a {
		inA[l]++
	}
	var out []string
	n := 0
	for _, l := range a {
		if inB[l] > 0 {
			inB[l]--
			continue
		}
		n++
		if len(out) < max {
			out = append(out, "- "+l)
		}
	}
	for _, l := range b {
		if inA[l] > 0 {
			inA[l]--
			continue
		}
		n++
		if len(out) < max {
			out = append(out, "+ "+l)
		}
	}
	if n == 0 {
		return ""
	}
	s := strings.Join(out, "\n")
	if n > len(out) {
		s += fmt.Sprintf("\n… %d more differing lines", n-len(out))
	}
	return s
}

// sameTree fails the test when the two manifests differ.
func sameTree(t testing.TB, what string, want, got []string) {
	t.Helper()
	if d := diffLines(want, got, 40); d != "" {
		t.Errorf("%s: trees differ (- want, + got):\n%s", what, d)
	}
}
