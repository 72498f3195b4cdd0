//go:build integration

package integration

// The load part of the reliability suite (issue 6): a random operation mix
// by several processes against a mount of the Debian fixture served by a
// daemon built with the race detector, and a data-verification exerciser on
// files of a lower layer. Both run briefly in CI and long with
// STRATA_STRESS=1 (make stress).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-fs/strata/integration/internal/fsstress"
	"github.com/strata-fs/strata/integration/internal/fsx"
)

func stressLong() bool { return os.Getenv("STRATA_STRESS") == "1" }

// envDuration reads a duration from the environment (def when unset).
func envDuration(t testing.TB, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// ---------------------------------------------------------------------------
// Binaries

var (
	raceOnce  sync.Once
	raceBin   string
	raceErr   error
	raceBuilt time.Duration
	toolMu    sync.Mutex
	toolBins  = map[string]string{}
)

// raceStrata builds strata with -race once per test run: the reports of the
// race detector go to the daemon's stderr, which the tests read.
func raceStrata(t testing.TB) string {
	t.Helper()
	requireRoot(t)
	raceOnce.Do(func() {
		dir, err := os.MkdirTemp("", "strata-race-bin-")
		if err != nil {
			raceErr = err
			return
		}
		raceBin = filepath.Join(dir, "strata-race")
		start := time.Now()
		cmd := exec.Command(goTool(), "build", "-race", "-o", raceBin, "./cmd/strata")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			raceErr = fmt.Errorf("go build -race ./cmd/strata: %v\n%s", err, out)
		}
		raceBuilt = time.Since(start)
	})
	if raceErr != nil {
		t.Fatal(raceErr)
	}
	t.Logf("strata built with -race in %v (once per run)", raceBuilt.Round(time.Millisecond))
	return raceBin
}

// goBinary builds a main package of the repository once per test run.
func goBinary(t testing.TB, pkg string) string {
	t.Helper()
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolBins[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "strata-tool-")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command(goTool(), "build", "-o", p, pkg)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	toolBins[pkg] = p
	return p
}

// ---------------------------------------------------------------------------
// A daemon in the foreground, ours to signal, measure and stop

type loadDaemon struct {
	cmd  *exec.Cmd
	mnt  string
	log  string
	done chan struct{}
}

// startDaemon runs bin args... (a foreground mount of mnt), with its
// stdout and stderr in a log file, and waits for the mount.
func startDaemon(t testing.TB, bin, mnt string, args ...string) *loadDaemon {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(filepath.Dir(mnt), filepath.Base(mnt)+".daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "STRATA_ROOT=", "GORACE=halt_on_error=0")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	d := &loadDaemon{cmd: cmd, mnt: mnt, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for !isFuseMount(mnt) {
		select {
		case <-d.done:
			t.Fatalf("%s %s exited before mounting: %v\n%s", bin, strings.Join(args, " "), cmd.ProcessState, d.tail(4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: not mounted after 60 s\n%s", bin, strings.Join(args, " "), d.tail(4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

func (d *loadDaemon) pid() int { return d.cmd.Process.Pid }

func (d *loadDaemon) logText() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

func (d *loadDaemon) tail(n int) string {
	s := d.logText()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// stop unmounts and waits for the daemon to exit by itself (30 s: the race
// detector slows its exit), killing it otherwise. Safe to call twice.
func (d *loadDaemon) stop(t testing.TB) {
	t.Helper()
	if isMounted(d.mnt) {
		if out, err := runErr(30*time.Second, "fusermount3", "-u", d.mnt); err != nil && isMounted(d.mnt) {
			t.Errorf("fusermount3 -u %s: %v %s: killing the daemon (pid %d)", d.mnt, err, strings.TrimSpace(out), d.pid())
			d.kill(t)
		}
	}
	unmount(t, d.mnt)
	select {
	case <-d.done:
		return
	case <-time.After(30 * time.Second):
	}
	t.Errorf("daemon (pid %d) still running 30 s after %s was unmounted: killing it", d.pid(), d.mnt)
	d.kill(t)
}

func (d *loadDaemon) kill(t testing.TB) {
	t.Helper()
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Kill()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Errorf("daemon (pid %d) did not die after SIGKILL", d.pid())
	}
}

// badLog matches what must never be in a daemon's log: a race report, a
// panic, a runtime fatal error.
var badLog = regexp.MustCompile(`WARNING: DATA RACE|(?m)^panic: |(?m)^fatal error: |SIGSEGV|unexpected fault address`)

// checkLog fails the test when the daemon's log holds a race report or a
// crash, quoting it.
func (d *loadDaemon) checkLog(t testing.TB) {
	t.Helper()
	s := d.logText()
	locs := badLog.FindAllStringIndex(s, -1)
	if len(locs) == 0 {
		return
	}
	first := locs[0][0]
	end := min(len(s), first+6000)
	t.Errorf("the daemon's log (%s) holds %d race report(s) or crash(es); the first:\n%s", d.log, len(locs), s[first:end])
}

var goroutineLine = regexp.MustCompile(`SIGUSR1: (\d+) goroutines`)

// goroutines asks the daemon for its goroutine count (SIGUSR1, answered in
// its log).
func (d *loadDaemon) goroutines(t testing.TB) int {
	t.Helper()
	before := len(goroutineLine.FindAllString(d.logText(), -1))
	if err := d.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatalf("signalling the daemon: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m := goroutineLine.FindAllStringSubmatch(d.logText(), -1)
		if len(m) > before {
			n, _ := strconv.Atoi(m[len(m)-1][1])
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the daemon did not log its goroutine count within 10 s of SIGUSR1")
	return 0
}

// fds counts the daemon's fds but for pipes and /dev/null: go-fuse keeps
// the pipe pairs of its spliced READ replies in a pool for reuse, one pair
// for each READ it ever served at once (bounded by its request readers),
// and opens /dev/null once to empty them.
func (d *loadDaemon) fds(t testing.TB) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", d.pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("counting the daemon's fds: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); !strings.HasPrefix(target, "pipe:") && target != os.DevNull {
			n++
		}
	}
	return n
}

// pipes counts the daemon's pipe fds (go-fuse's splice pool, see fds).
func (d *loadDaemon) pipes() int {
	dir := fmt.Sprintf("/proc/%d/fd", d.pid())
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}

// fdTargets names what each of the daemon's fds refers to.
func (d *loadDaemon) fdTargets() []string {
	dir := fmt.Sprintf("/proc/%d/fd", d.pid())
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		// Layer fds show as "/" (the layers are private mounts): the
		// inode number and open flags tell them apart.
		info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", d.pid(), e.Name()))
		var extra []string
		for _, l := range strings.Split(string(info), "\n") {
			if strings.HasPrefix(l, "flags:") || strings.HasPrefix(l, "ino:") {
				extra = append(extra, strings.Join(strings.Fields(l), " "))
			}
		}
		out = append(out, e.Name()+" -> "+target+" ("+strings.Join(extra, ", ")+")")
	}
	return out
}

// rssKiB is the daemon's resident set (VmRSS), 0 if it cannot be read.
func (d *loadDaemon) rssKiB() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.pid()))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// settle makes the kernel forget what it can (dentries and inodes: FORGET
// for every node no one holds) and waits until the daemon's fd count stops
// changing, so that counts before and after a load compare.
func (d *loadDaemon) settle(t testing.TB) int {
	t.Helper()
	last, stableSince := -1, time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0o200); err != nil {
			t.Fatalf("drop_caches: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
		n := d.fds(t)
		if n != last {
			last, stableSince = n, time.Now()
		} else if time.Since(stableSince) >= time.Second {
			break
		}
	}
	return last
}

// inspectLowers is the image's lowerdir (top layer first).
func inspectLowers(t testing.TB, ref string) []string {
	t.Helper()
	r := mustStrata(t, "inspect", ref)
	var v struct {
		Lowerdir string `json:"lowerdir"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &v); err != nil || v.Lowerdir == "" {
		t.Fatalf("strata inspect %s: no lowerdir (%v):\n%s", ref, err, r.Stdout)
	}
	return strings.Split(v.Lowerdir, ":")
}

// ---------------------------------------------------------------------------
// fsstress

// fsstressDirs are the Debian fixture's directories the mix works on: ones
// changed by every layer (etc, var: merged directories, whiteouts of the
// cleanup layer), the opaque /usr/share/doc, and trees of many small files.
const fsstressDirs = "etc,var,usr/share/doc,usr/share/zoneinfo,usr/share/perl5,usr/share/common-licenses"

// TestReliabilityFsstress runs 8 fsstress processes for 60 s (10 min with
// STRATA_STRESS=1; STRATA_FSSTRESS_DURATION overrides, STRATA_FSSTRESS_SEED
// repeats a run) against a mount of the Debian fixture served by strata
// built with -race. Afterwards: no unexpected errno, no race report or
// crash in the daemon's log, the daemon's fds and goroutines back to where
// they were before the load once the kernel forgot its inodes, RSS
// sampled throughout, and the tree seen through the mount equal to the
// kernel's overlayfs on the same layers and (a copy of) the upper.
func TestReliabilityFsstress(t *testing.T) {
	requireCommands(t, "import", "mount", "inspect")
	dur := envDuration(t, "STRATA_FSSTRESS_DURATION", map[bool]time.Duration{false: 60 * time.Second, true: 10 * time.Minute}[stressLong()])
	const procs = 8
	seed := envInt("STRATA_FSSTRESS_SEED", time.Now().UnixNano()%1_000_000_000)
	fx := fixture(t, "debian")
	bin := raceStrata(t)
	worker := goBinary(t, "./integration/internal/fsstress/worker")
	const ref = "fixture/debian:latest"
	mustStrata(t, "import", filepath.Join(fx, "debian-docker-archive.tar"), "--tag", ref)
	lowers := inspectLowers(t, ref)

	base := t.TempDir()
	upper, mnt := filepath.Join(base, "upper"), filepath.Join(base, "mnt")
	d := startDaemon(t, bin, mnt, "--root", storeRoot(t), "mount", ref, mnt, "-f", "--upper", upper)

	// Before: the tree walked by a few goroutines at once (so that the
	// server's request readers have started), then forgotten.
	var wg sync.WaitGroup
	for _, top := range []string{"etc", "usr", "var", "lib"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			filepath.WalkDir(filepath.Join(mnt, top), func(string, os.DirEntry, error) error { return nil })
		}()
	}
	wg.Wait()
	fdsBefore := d.settle(t)
	grBefore := d.goroutines(t)
	rssBefore := d.rssKiB()
	t.Logf("fsstress: seed %d, %d processes for %v on %s (directories %s); daemon pid %d: %d fds, %d goroutines, RSS %d MiB",
		seed, procs, dur, ref, fsstressDirs, d.pid(), fdsBefore, grBefore, rssBefore>>10)

	type proc struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
		done           chan struct{}
	}
	ps := make([]*proc, procs)
	start := time.Now()
	for i := range ps {
		p := &proc{done: make(chan struct{})}
		p.cmd = exec.Command(worker, "-root", mnt, "-dirs", fsstressDirs,
			"-scratch", fmt.Sprintf("stress/p%d", i), "-shared", "stress/shared",
			"-seed", strconv.FormatInt(seed+int64(i), 10), "-duration", dur.String())
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("starting worker %d: %v", i, err)
		}
		go func() { p.cmd.Wait(); close(p.done) }()
		ps[i] = p
	}
	killAll := func() {
		for _, p := range ps {
			p.cmd.Process.Kill()
		}
	}
	// RSS once a second while the workers run; a run that outlasts its
	// time by two minutes has a hung request: the daemon is killed (which
	// fails every request in flight) and so are the workers.
	var rss []int64
	deadline := time.After(dur + 2*time.Minute)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for _, p := range ps {
	wait:
		for {
			select {
			case <-p.done:
				break wait
			case <-tick.C:
				rss = append(rss, d.rssKiB())
			case <-deadline:
				d.kill(t)
				killAll()
				t.Fatalf("the workers did not finish within %v: a request hangs\ndaemon log:\n%s", dur+2*time.Minute, d.tail(4000))
			}
		}
	}
	elapsed := time.Since(start)

	var total fsstress.Stats
	total.Ops, total.Errnos = map[string]int64{}, map[string]int64{}
	for i, p := range ps {
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("worker %d (seed %d) exited %d:\n%s", i, seed+int64(i), code, p.stderr.String())
			continue
		}
		var st fsstress.Stats
		if err := json.Unmarshal(p.stdout.Bytes(), &st); err != nil {
			t.Errorf("worker %d: reading its stats: %v\n%s", i, err, p.stdout.String())
			continue
		}
		for k, v := range st.Ops {
			total.Ops[k] += v
		}
		for k, v := range st.Errnos {
			total.Errnos[k] += v
		}
		total.NUnexp += st.NUnexp
		if st.NUnexp > 0 {
			t.Errorf("worker %d (seed %d): %d unexpected failure(s), the first:\n  %s", i, seed+int64(i), st.NUnexp, strings.Join(st.Unexpected, "\n  "))
		}
	}
	n := total.Total()
	t.Logf("fsstress: %d operations in %v (%.0f/s), %d failed with an expected errno, %d unexpected",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), sumValues(total.Errnos), total.NUnexp)
	t.Logf("fsstress: operations: %s", mapText(total.Ops))
	t.Logf("fsstress: errnos: %s", mapText(total.Errnos))
	if n == 0 {
		t.Fatal("the workers ran no operation")
	}

	// After: forgotten again, counted again.
	fdsAfter := d.settle(t)
	grAfter := d.goroutines(t)
	rssAfter := d.rssKiB()
	rss = append(rss, rssAfter)
	lo, hi := rss[0], rss[0]
	for _, v := range rss {
		lo, hi = min(lo, v), max(hi, v)
	}
	t.Logf("daemon: fds %d before, %d after (pipes and /dev/null not counted); goroutines %d before, %d after; RSS %d MiB before, min %d / max %d MiB during, %d MiB after (%d samples)",
		fdsBefore, fdsAfter, grBefore, grAfter, rssBefore>>10, lo>>10, hi>>10, rssAfter>>10, len(rss))
	t.Logf("daemon RSS MiB, one sample a second: %s", rssText(rss))
	if fdsAfter > fdsBefore {
		t.Errorf("fd leak: the daemon holds %d fds after the load, %d before (both once the kernel forgot its inodes):\n  %s",
			fdsAfter, fdsBefore, strings.Join(d.fdTargets(), "\n  "))
	}
	// go-fuse's splice pool holds a pipe pair per READ served at once, and
	// no more READs run at once than request readers (up to 16, above).
	if p := d.pipes(); p > 2*(16+4) {
		t.Errorf("pipe leak: the daemon holds %d pipe fds after the load", p)
	}
	// The FUSE server starts request readers on demand (up to 16) and
	// keeps some; more than that is a leak.
	if grAfter > grBefore+16 {
		t.Errorf("goroutine leak: %d goroutines after the load, %d before", grAfter, grBefore)
	}
	checkRSSStable(t, rss)

	// The tree through strata, then through the kernel on the same layers
	// and a copy of the upper (the kernel writes its own marks into an
	// upper it mounts).
	cmpStart := time.Now()
	sMan := treeManifestFull(t, mnt)
	sList, err := listTree(mnt, false)
	if err != nil {
		t.Fatalf("listing the strata mount: %v", err)
	}
	d.stop(t)
	d.checkLog(t)
	kUpper, kWork, kMnt := filepath.Join(base, "kernel-upper"), filepath.Join(base, "kernel-work"), filepath.Join(base, "kernel-mnt")
	run(t, 5*time.Minute, "cp", "-a", upper, kUpper)
	if err := os.Mkdir(kWork, 0o755); err != nil {
		t.Fatal(err)
	}
	kernelOverlay(t, lowers, kUpper, kWork, kMnt, kernelDefaultOpts...)
	kMan := treeManifestFull(t, kMnt)
	kList, err := listTree(kMnt, false)
	if err != nil {
		t.Fatalf("listing the kernel mount: %v", err)
	}
	sameTree(t, "tree-manifest: kernel overlayfs on the layers and strata's upper (-) vs strata's mount (+)", kMan, sMan)
	if diff := diffLines(kList, sList, 40); diff != "" {
		t.Errorf("stat, nlink, xattrs: kernel overlayfs on the layers and strata's upper (-) vs strata's mount (+):\n%s", diff)
	}
	t.Logf("trees compared: %d entries, in %v", len(sMan), time.Since(cmpStart).Round(time.Millisecond))
	leftovers(t, filepath.Join(base, ".upper.work"))
}

// checkRSSStable fails when the daemon's RSS keeps growing through the
// load: the largest sample of the last quarter against the largest of the
// second quarter (the first is warm-up), with room for the race detector's
// shadow memory and the Go heap's normal swing.
func checkRSSStable(t testing.TB, rss []int64) {
	t.Helper()
	if len(rss) < 8 {
		return
	}
	q := len(rss) / 4
	var early, late int64
	for _, v := range rss[q : 2*q] {
		early = max(early, v)
	}
	for _, v := range rss[3*q:] {
		late = max(late, v)
	}
	t.Logf("RSS: max %d MiB in the second quarter of the run, %d MiB in the last", early>>10, late>>10)
	if late > early*3/2+64<<10 {
		t.Errorf("RSS keeps growing: max %d MiB in the second quarter of the run, %d MiB in the last", early>>10, late>>10)
	}
}

// leftovers fails when the work directory holds anything but the hard-link
// index and the kernel-compatible work area after a clean unmount: a
// half-made copy-up or whiteout left behind.
func leftovers(t testing.TB, work string) {
	t.Helper()
	ents, err := os.ReadDir(work)
	if err != nil {
		t.Errorf("reading the work dir: %v", err)
		return
	}
	var names []string
	for _, e := range ents {
		if e.Name() == "index" || e.Name() == "work" {
			continue
		}
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("the work dir %s holds leftovers after unmount: %s", work, strings.Join(names, " "))
	}
}

func sumValues(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func mapText(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}

func rssText(rss []int64) string {
	parts := make([]string, len(rss))
	for i, v := range rss {
		parts[i] = strconv.FormatInt(v>>10, 10)
	}
	return strings.Join(parts, " ")
}

// ---------------------------------------------------------------------------
// fsx

// fsxLayers makes two lower layers of files for the exerciser: dense and
// sparse ones (holes at the start, middle and end), an empty one, one made
// only of a hole, one the upper layer shadows, and a file with two names.
// It returns the lowerdir (top first), the names and their contents.
func fsxLayers(t testing.TB, dir string, seed int64) ([]string, []string, [][]byte) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	random := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	top, bottom := filepath.Join(dir, "layer2"), filepath.Join(dir, "layer1")
	type file struct {
		layer, name string
		size        int
		chunks      map[int][]byte // offset -> data; the rest is a hole
	}
	files := []file{
		{bottom, "dense", 3 << 20, map[int][]byte{0: random(3 << 20)}},
		{top, "sparse", 4 << 20, map[int][]byte{0: random(100 << 10), 1 << 20: random(200 << 10), 3<<20 + 12345: random(5000)}},
		{bottom, "hole-first", 2 << 20, map[int][]byte{(2 << 20) - 70000: random(70000)}},
		{top, "small", 1000, map[int][]byte{0: random(1000)}},
		{bottom, "empty", 0, nil},
		{bottom, "all-hole", 1 << 20, nil},
		{bottom, "shadowed", 500 << 10, map[int][]byte{0: random(500 << 10)}},
		{top, "shadowed", 200<<10 + 7, map[int][]byte{0: random(200<<10 + 7)}},
		{bottom, "linked-a", 1500 << 10, map[int][]byte{0: random(300 << 10), 1 << 20: random(1000)}},
	}
	model := map[string][]byte{}
	for _, f := range files {
		p := filepath.Join(f.layer, "fsx", f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		content := make([]byte, f.size)
		for off, b := range f.chunks {
			if _, err := fh.WriteAt(b, int64(off)); err != nil {
				t.Fatal(err)
			}
			copy(content[off:], b)
		}
		if err := fh.Truncate(int64(f.size)); err != nil {
			t.Fatal(err)
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
		if f.layer == top || model[f.name] == nil {
			model[f.name] = content
		}
	}
	// Two names of one lower file: written through one, the other shows
	// it (strata's hard-link index, the kernel's index=on).
	if err := os.Link(filepath.Join(bottom, "fsx", "linked-a"), filepath.Join(bottom, "fsx", "linked-b")); err != nil {
		t.Fatal(err)
	}
	model["linked-b"] = model["linked-a"]
	var names []string
	for n := range model {
		names = append(names, n)
	}
	sort.Strings(names)
	contents := make([][]byte, len(names))
	for i, n := range names {
		contents[i] = model[n]
	}
	return []string{top, bottom}, names, contents
}

// TestReliabilityFsx runs the exerciser on files that start in a lower
// layer, through a daemon built with -race, with FUSE passthrough (data
// goes from the kernel to the layer files; copy-up and metadata through
// strata) and without (every read and write through strata): 10000
// operations each in CI, 500000 each (1M in all) with STRATA_STRESS=1
// (STRATA_FSX_OPS overrides; STRATA_FSX_SEED repeats a run). Every step is
// checked against the model; at the end strata mounted again and the
// kernel's overlayfs on the same layers and upper must show the same
// contents.
func TestReliabilityFsx(t *testing.T) {
	requireRoot(t)
	ops := envInt("STRATA_FSX_OPS", map[bool]int64{false: 10000, true: 500_000}[stressLong()])
	seed := envInt("STRATA_FSX_SEED", time.Now().UnixNano()%1_000_000_000)
	bin := raceStrata(t)
	for _, mode := range []struct{ name, opt string }{
		{"passthrough", ""},
		{"no-passthrough", ",passthrough=0"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			base := t.TempDir()
			lowers, names, initial := fsxLayers(t, base, seed)
			upper, work, mnt := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
			for _, p := range []string{upper, work} {
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			d := startDaemon(t, bin, mnt, "-o", "lowerdir="+strings.Join(lowers, ":")+",upperdir="+upper+",workdir="+work+mode.opt, "-f", mnt)
			paths := make([]string, len(names))
			aliases := map[int]int{}
			for i, n := range names {
				paths[i] = filepath.Join(mnt, "fsx", n)
				if n == "linked-b" {
					aliases[i] = sort.SearchStrings(names, "linked-a")
				}
			}
			dropEvery := int64(5000)
			if stressLong() {
				dropEvery = 50000
			}
			t.Logf("fsx %s: seed %d, %d operations on %d files (%s)", mode.name, seed, ops, len(names), strings.Join(names, " "))
			var res fsx.Result
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				res, err = fsx.Run(fsx.Config{
					Files: paths, Initial: initial, Aliases: aliases, Seed: seed, Ops: ops,
					DropCaches: func() error {
						return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
					},
					DropEvery: dropEvery,
					Log:       testLogWriter{t},
				})
			}()
			limit := 3*time.Minute + time.Duration(ops)*10*time.Millisecond
			select {
			case <-done:
			case <-time.After(limit):
				d.kill(t) // fails the stuck request
				<-done
				t.Fatalf("fsx did not finish within %v: a request hangs\ndaemon log:\n%s", limit, d.tail(4000))
			}
			if err != nil {
				t.Fatalf("%v\nreproduce: STRATA_FSX_SEED=%d STRATA_FSX_OPS=%d go test -tags integration -run 'TestReliabilityFsx/%s' -v -count=1 ./integration/",
					err, seed, ops, mode.name)
			}
			t.Logf("fsx %s: %d operations in %v (%.0f/s): %s; refused as unsupported: %s",
				mode.name, res.Ops, res.Elapsed.Round(time.Millisecond), float64(res.Ops)/res.Elapsed.Seconds(), mapText(res.ByOp), mapText(res.Skipped))
			d.stop(t)
			d.checkLog(t)
			leftovers(t, work)

			// What strata left in its upper reads the same after a
			// remount, and through the kernel on a copy of it (but for
			// the hard-linked names: the kernel does not read strata's
			// hard-link index, a known difference, see the README).
			check := func(who, dir string, skipLinked bool) {
				for i, n := range names {
					if skipLinked && strings.HasPrefix(n, "linked-") {
						continue
					}
					got, err := os.ReadFile(filepath.Join(dir, "fsx", n))
					if err != nil {
						t.Errorf("reading %s through %s: %v", n, who, err)
						continue
					}
					if !bytes.Equal(got, res.Final[i]) {
						k := 0
						for k < len(got) && k < len(res.Final[i]) && got[k] == res.Final[i][k] {
							k++
						}
						t.Errorf("%s through %s: %d bytes, want %d, first difference at %d", n, who, len(got), len(res.Final[i]), k)
					}
				}
			}
			again := startDaemon(t, strataBin, mnt, "-o", "lowerdir="+strings.Join(lowers, ":")+",upperdir="+upper+",workdir="+work+mode.opt, "-f", mnt)
			check("strata remounted", mnt, false)
			again.stop(t)
			kUpper, kWork, kMnt := filepath.Join(base, "kernel-upper"), filepath.Join(base, "kernel-work"), filepath.Join(base, "kernel-mnt")
			run(t, time.Minute, "cp", "-a", upper, kUpper)
			if err := os.Mkdir(kWork, 0o755); err != nil {
				t.Fatal(err)
			}
			kernelOverlay(t, lowers, kUpper, kWork, kMnt, kernelDefaultOpts...)
			check("the kernel on strata's upper", kMnt, true)
		})
	}
}

// testLogWriter sends progress lines to t.Logf.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// ---------------------------------------------------------------------------
// Listings under concurrent change

// TestReliabilityReaddirWhileChanging lists a merged directory of 3000
// names in small getdents calls while other processes add and remove other
// names in it and list it too (which refills the kernel's listing cache):
// every name that exists throughout must come back exactly once per
// listing (POSIX leaves only the added and removed names unspecified). The
// kernel's overlayfs on the same layers is the control.
func TestReliabilityReaddirWhileChanging(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	stable := map[string]bool{}
	for i := 0; i < 1500; i++ {
		n := fmt.Sprintf("lower-%04d", i)
		if err := os.MkdirAll(filepath.Join(lower, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(lower, "d", n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		stable[n] = true
	}
	dur := envDuration(t, "STRATA_READDIR_DURATION", map[bool]time.Duration{false: 8 * time.Second, true: 60 * time.Second}[stressLong()])
	for _, impl := range []string{"kernel", "strata"} {
		t.Run(impl, func(t *testing.T) {
			upper, work, mnt := filepath.Join(base, impl+"-upper"), filepath.Join(base, impl+"-work"), filepath.Join(base, impl+"-mnt")
			for _, p := range []string{upper, work} {
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if impl == "kernel" {
				kernelOverlay(t, []string{lower}, upper, work, mnt, kernelDefaultOpts...)
			} else {
				startDaemon(t, strataBin, mnt, "-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work, "-f", mnt)
			}
			dir := filepath.Join(mnt, "d")
			for i := 0; i < 1500; i++ {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("upper-%04d", i)), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := map[string]bool{}
			for n := range stable {
				want[n] = true
			}
			for i := 0; i < 1500; i++ {
				want[fmt.Sprintf("upper-%04d", i)] = true
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			// Changers: add and remove names of their own, and list the
			// directory whole (refilling the cache of the listing).
			for c := 0; c < 2; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; ; k++ {
						select {
						case <-stop:
							return
						default:
						}
						p := filepath.Join(dir, fmt.Sprintf("tmp-%d-%d", c, k%50))
						if k%100 < 50 {
							os.WriteFile(p, nil, 0o644)
						} else {
							os.Remove(p)
						}
						if k%10 == 0 {
							if f, err := os.Open(dir); err == nil {
								f.Readdirnames(-1)
								f.Close()
							}
						}
					}
				}()
			}
			// Readers: list in 1 KiB getdents calls, pausing between them.
			var mu sync.Mutex
			var problems []string
			listings := 0
			for r := 0; r < 2; r++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 1024)
					for {
						select {
						case <-stop:
							return
						default:
						}
						fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
						if err != nil {
							mu.Lock()
							problems = append(problems, fmt.Sprintf("open: %v", err))
							mu.Unlock()
							return
						}
						seen := map[string]int{}
						for {
							n, err := syscall.ReadDirent(fd, buf)
							if err != nil {
								mu.Lock()
								problems = append(problems, fmt.Sprintf("getdents: %v", err))
								mu.Unlock()
								break
							}
							if n == 0 {
								break
							}
							_, _, names := syscall.ParseDirent(buf[:n], -1, nil)
							for _, nm := range names {
								seen[nm]++
							}
							time.Sleep(100 * time.Microsecond)
						}
						syscall.Close(fd)
						var bad []string
						for nm := range want {
							if seen[nm] != 1 {
								bad = append(bad, fmt.Sprintf("%s x%d", nm, seen[nm]))
							}
						}
						for nm, k := range seen {
							if k > 1 && !want[nm] {
								bad = append(bad, fmt.Sprintf("%s x%d", nm, k))
							}
						}
						mu.Lock()
						listings++
						if len(bad) > 0 && len(problems) < 5 {
							sort.Strings(bad)
							problems = append(problems, fmt.Sprintf("a listing of %d names: %d names seen other than once: %s", len(seen), len(bad), strings.Join(bad[:min(len(bad), 10)], ", ")))
						}
						mu.Unlock()
					}
				}()
			}
			time.Sleep(dur)
			close(stop)
			wg.Wait()
			t.Logf("%s: %d listings of %d stable names in %v", impl, listings, len(want), dur)
			if len(problems) > 0 {
				t.Errorf("%s: %d bad listings, e.g.:\n  %s", impl, len(problems), strings.Join(problems, "\n  "))
			}
		})
	}
}
