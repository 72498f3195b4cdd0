//go:build integration

package integration

// Issue 6, filesystem faults: the daemon killed with SIGKILL while writers
// copy up and rewrite files, an upper filesystem that fills up, and lower
// layers removed or made unreadable under a live mount. Each test has a short
// form for CI and a long one under STRATA_STRESS=1 (make stress).

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// faultStress selects the long forms (make stress).
func faultStress() bool { return os.Getenv("STRATA_STRESS") == "1" }

// faultBytes is n pseudo-random bytes determined by seed: every version of
// every file differs from every other, so a mix-up cannot pass a comparison.
func faultBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b[:n]
}

func faultSeed(s string) uint64 {
	h := sha256.Sum256([]byte(s))
	var v uint64
	for _, c := range h[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

// faultDaemonPIDs lists the strata processes (this run's binary) that have
// mnt among their arguments: the daemon serving our own mount, whatever form
// started it.
func faultDaemonPIDs(mnt string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || exe != strataBin {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(cmdline), "\x00"), mnt) {
			out = append(out, pid)
		}
	}
	return out
}

// faultDaemonPID is the one daemon serving mnt.
func faultDaemonPID(t testing.TB, mnt string) int {
	t.Helper()
	pids := faultDaemonPIDs(mnt)
	if len(pids) != 1 {
		t.Fatalf("want exactly one strata daemon serving %s, found %v", mnt, pids)
	}
	return pids[0]
}

// faultKill sends SIGKILL to pid (a daemon of our own mount) and waits until
// it is gone.
func faultKill(t testing.TB, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !faultAlive(pid) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("strata daemon %d still alive 10 s after SIGKILL", pid)
}

// faultAlive: pid exists and is not a zombie.
func faultAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// faultMountCount is how many mounts sit at dir (a dead one under a new one counts).
func faultMountCount(dir string) int {
	n := 0
	for _, m := range mounts() {
		if m.Point == dir {
			n++
		}
	}
	return n
}

// faultWorkLeftovers lists the staging entries strata left in work/.
func faultWorkLeftovers(t testing.TB, work string) []string {
	t.Helper()
	ents, err := os.ReadDir(work)
	if err != nil {
		t.Fatalf("reading work dir: %v", err)
	}
	var out []string
	for _, e := range ents {
		if e.Name() != "index" {
			out = append(out, e.Name())
		}
	}
	return out
}

// faultErrno extracts the errno of err (0 for nil, -1 for another error).
func faultErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.Errno(^uintptr(0))
}

func faultErrnoName(e syscall.Errno) string {
	switch e {
	case 0:
		return "ok"
	case syscall.Errno(^uintptr(0)):
		return "non-errno error"
	}
	return unix.ErrnoName(e)
}

// faultWithin runs f, failing the test when it takes longer than d (a hung
// FUSE request): the goroutine is left behind, the mount's cleanup kills the
// daemon, which frees it.
func faultWithin(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: no answer after %v (the daemon hangs)", what, d)
	}
}

// ---------------------------------------------------------------------------
// kill -9 during copy-up and rewrites

// A faultFile is one file the writers change; cur is its content as of the
// last fsynced change (the model), lower its content in the image.
type faultFile struct {
	rel        string
	lower, cur []byte
}

// A faultOp is one change a writer makes, ending in fsync.
type faultOp struct {
	kind string // append, overwrite, rename, truncate
	f    *faultFile
	data []byte // append: the bytes added; overwrite, rename: the new content
	size int64  // truncate
	// firstWrite: the file was still the lower's when the op began (the op
	// copies it up).
	firstWrite bool
}

func (op *faultOp) result(cur []byte) []byte {
	switch op.kind {
	case "append":
		return append(slices.Clip(cur), op.data...)
	case "truncate":
		if int(op.size) <= len(cur) {
			return slices.Clone(cur[:op.size])
		}
		return append(slices.Clone(cur), make([]byte, int(op.size)-len(cur))...)
	default:
		return op.data
	}
}

// allowed reports whether got is a state the file may be in after a crash
// in the middle of op (not fsynced): the old content, or what the op's
// syscalls make of it when only some of them ran. A copy-up is one of those
// syscalls and must be all or nothing, so a partial copy of the lower data
// is never among them.
func (op *faultOp) allowed(cur, got []byte) bool {
	if bytes.Equal(got, cur) {
		return true
	}
	switch op.kind {
	case "append": // old + a prefix of the appended bytes
		return len(got) > len(cur) && len(got) <= len(cur)+len(op.data) &&
			bytes.Equal(got[:len(cur)], cur) && bytes.Equal(got[len(cur):], op.data[:len(got)-len(cur)])
	case "overwrite": // O_TRUNC, then the new bytes in order
		return len(got) <= len(op.data) && bytes.Equal(got, op.data[:len(got)])
	default: // rename: atomic; truncate: one syscall
		return bytes.Equal(got, op.result(cur))
	}
}

type faultWriter struct {
	id      int
	mnt     string
	files   []*faultFile
	rng     *rand.Rand
	pending *faultOp // the op in progress when the writer stopped
	done    int      // ops completed (fsynced)
	err     error    // what stopped it
	errAt   time.Time
	seq     uint64
}

func (w *faultWriter) tmpName(f *faultFile) string {
	return filepath.Join(w.mnt, filepath.Dir(f.rel), ".tmp-"+filepath.Base(f.rel))
}

// next picks a change, favouring files still in the lower layer so that
// copy-ups happen in every round.
func (w *faultWriter) next(inUpper func(*faultFile) bool) *faultOp {
	var fresh []*faultFile
	for _, f := range w.files {
		if !inUpper(f) {
			fresh = append(fresh, f)
		}
	}
	f := w.files[w.rng.IntN(len(w.files))]
	if len(fresh) > 0 && w.rng.IntN(2) == 0 {
		f = fresh[w.rng.IntN(len(fresh))]
	}
	w.seq++
	seed := faultSeed(fmt.Sprintf("w%d-%d-%d", w.id, w.seq, w.rng.Uint64()))
	op := &faultOp{f: f}
	kinds := []string{"append", "overwrite", "rename", "truncate"}
	if len(f.cur) > 16<<20 {
		kinds = kinds[1:] // keep files bounded
	}
	switch op.kind = kinds[w.rng.IntN(len(kinds))]; op.kind {
	case "append":
		op.data = faultBytes(seed, 1+w.rng.IntN(256<<10))
	case "overwrite", "rename":
		op.data = faultBytes(seed, w.rng.IntN(3<<20))
	case "truncate":
		op.size = int64(w.rng.IntN(len(f.cur) + 64<<10 + 1))
	}
	return op
}

// apply runs op through the mount. Every step that can fail ends the op.
func (w *faultWriter) apply(op *faultOp) error {
	p := filepath.Join(w.mnt, op.f.rel)
	writeAllSync := func(fd int, data []byte) error {
		for off := 0; off < len(data); {
			end := min(off+128<<10, len(data))
			n, err := unix.Write(fd, data[off:end])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
			off += n
		}
		if err := unix.Fsync(fd); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
		return nil
	}
	openRetry := func(p string, flags int, mode uint32) (int, error) {
		for {
			fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
			if err != unix.EINTR {
				return fd, err
			}
		}
	}
	switch op.kind {
	case "append", "overwrite":
		flags := unix.O_WRONLY | unix.O_APPEND
		if op.kind == "overwrite" {
			flags = unix.O_WRONLY | unix.O_TRUNC
		}
		fd, err := openRetry(p, flags, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", op.f.rel, err)
		}
		err = writeAllSync(fd, op.data)
		unix.Close(fd)
		return err
	case "rename":
		tmp := w.tmpName(op.f)
		fd, err := openRetry(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", tmp, err)
		}
		err = writeAllSync(fd, op.data)
		unix.Close(fd)
		if err != nil {
			return err
		}
		return unix.Rename(tmp, p)
	case "truncate":
		if err := unix.Truncate(p, op.size); err != nil {
			return fmt.Errorf("truncate %s: %w", op.f.rel, err)
		}
		fd, err := openRetry(p, unix.O_RDONLY, 0)
		if err != nil {
			return err
		}
		err = unix.Fsync(fd)
		unix.Close(fd)
		return err
	}
	return fmt.Errorf("unknown op %s", op.kind)
}

func (w *faultWriter) run(stop *atomic.Bool, inUpper func(*faultFile) bool) {
	for !stop.Load() {
		op := w.next(inUpper)
		op.firstWrite = !inUpper(op.f)
		w.pending = op
		if err := w.apply(op); err != nil {
			w.err, w.errAt = fmt.Errorf("%s of %s: %w", op.kind, op.f.rel, err), time.Now()
			return
		}
		op.f.cur = op.result(op.f.cur)
		w.pending = nil
		w.done++
	}
}

// faultArchive builds a docker-archive of two layers: per writer directory
// wN, files f0..f6 of 0 B to 12 MiB in the bottom layer, f1 and f3 replaced
// by the top layer. It returns the archive and each file's content.
func faultArchive(t *testing.T, writers int) (string, map[string][]byte) {
	t.Helper()
	sizes := []int{0, 1, 4097, 65536, 1<<20 + 3, 4 << 20, 12 << 20}
	contents := map[string][]byte{}
	layer := func(n int, files map[string][]byte) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		names := make([]string, 0, len(files))
		for name := range files {
			names = append(names, name)
		}
		sort.Strings(names)
		mt := time.Unix(1_000_000_000, 0)
		for w := 0; w < writers && n == 1; w++ {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("w%d/", w), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
		}
		for _, name := range names {
			b := files[name]
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: mt})
			tw.Write(b)
		}
		tw.Close()
		return buf.Bytes()
	}
	bottom, top := map[string][]byte{}, map[string][]byte{}
	for w := 0; w < writers; w++ {
		for i, sz := range sizes {
			rel := fmt.Sprintf("w%d/f%d", w, i)
			bottom[rel] = faultBytes(faultSeed("lower1/"+rel), sz)
			contents[rel] = bottom[rel]
		}
		for i, sz := range map[int]int{1: 5000, 3: 2<<20 + 1} {
			rel := fmt.Sprintf("w%d/f%d", w, i)
			top[rel] = faultBytes(faultSeed("lower2/"+rel), sz)
			contents[rel] = top[rel]
		}
	}
	layers := [][]byte{layer(1, bottom), layer(2, top)}
	var diffIDs, names []string
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(n string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	for _, l := range layers {
		s := sha256.Sum256(l)
		d := hex.EncodeToString(s[:])
		diffIDs = append(diffIDs, "sha256:"+d)
		names = append(names, d+".tar")
		add(d+".tar", l)
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"rootfs":  map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history": []map[string]string{{"created_by": "faults: files"}, {"created_by": "faults: replace f1 f3"}}})
	cs := sha256.Sum256(cfg)
	cname := hex.EncodeToString(cs[:]) + ".json"
	man, _ := json.Marshal([]map[string]any{{"Config": cname, "RepoTags": []string{"faults:latest"}, "Layers": names}})
	add(cname, cfg)
	add("manifest.json", man)
	tw.Close()
	p := filepath.Join(t.TempDir(), "faults.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, contents
}

// faultMountRecord is the store's record of the mount at mnt (PID 0: none).
func faultMountRecord(t testing.TB, mnt string) int {
	t.Helper()
	var recs []struct {
		Mountpoint string
		PID        int
	}
	out := mustStrata(t, "mounts", "--format", "json").Stdout
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("strata mounts --format json: %v\n%s", err, out)
	}
	for _, r := range recs {
		if r.Mountpoint == mnt {
			return r.PID
		}
	}
	return 0
}

// TestReliabilityKillDaemon kills the daemon with SIGKILL at a random moment
// while 4 writers append to, overwrite, replace (tmp + rename) and truncate
// files that start in the lower layers, each change ending in fsync. After
// each kill the mount must be dead (ENOTCONN), be recovered without a
// reboot (strata umount, or a new mount straight over the dead one, by
// `strata mount` and by `strata -o`, sometimes while a process still holds a
// file of the dead mount open), work/ must be clean after the remount, and
// every file must hold its last fsynced content or a state the interrupted
// change allows (never a partial copy-up). Between rounds some copied-up
// files are removed from the upper (unmounted) so that copy-ups go on. The
// lower layers must be unchanged at the end. 20 rounds, 200 under
// STRATA_STRESS=1.
func TestReliabilityKillDaemon(t *testing.T) {
	requireCommands(t, "import", "mount", "umount", "mounts", "inspect")
	rounds := 20
	if faultStress() {
		rounds = 200
	}
	const writers = 4
	archive, lowerContent := faultArchive(t, writers)
	mustStrata(t, "import", archive)
	var insp struct {
		Lowerdir string `json:"lowerdir"`
	}
	if err := json.Unmarshal([]byte(mustStrata(t, "inspect", "faults:latest").Stdout), &insp); err != nil || insp.Lowerdir == "" {
		t.Fatalf("strata inspect: no lowerdir (%v)", err)
	}
	lowers := lowerStack{lowers: strings.Split(insp.Lowerdir, ":")}
	lowerDigest := hashLowers(t, lowers)

	base := t.TempDir()
	upper := filepath.Join(base, "upper")
	work := filepath.Join(base, ".upper.work") // where strata mount --upper keeps it
	mnt := filepath.Join(base, "mnt")
	for _, d := range []string{upper, work, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, pid := range faultDaemonPIDs(mnt) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		unmount(t, mnt)
	})
	// Both forms share the upper and work dirs; every third round serves
	// file data through the daemon instead of passthrough.
	mountIt := func(round int, storeForm bool) {
		t.Helper()
		var r result
		if storeForm {
			args := []string{"mount", "faults:latest", mnt, "--upper", upper}
			if round%3 == 2 {
				args = append(args, "--no-passthrough")
			}
			r = strata(t, args...)
		} else {
			opts := "lowerdir=" + insp.Lowerdir + ",upperdir=" + upper + ",workdir=" + work
			if round%3 == 2 {
				opts += ",passthrough=0"
			}
			r = strataExec(t, defaultTimeout, "-o", opts, mnt)
		}
		if r.Code != 0 {
			t.Fatalf("round %d: mount: %v", round, r)
		}
		if n := faultMountCount(mnt); n != 1 {
			t.Fatalf("round %d: %d mounts at %s after mounting, want 1 (a dead one left underneath?)", round, n, mnt)
		}
	}

	var files []*faultFile
	rels := make([]string, 0, len(lowerContent))
	for rel := range lowerContent {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	byWriter := make([][]*faultFile, writers)
	for _, rel := range rels {
		f := &faultFile{rel: rel, lower: lowerContent[rel], cur: lowerContent[rel]}
		files = append(files, f)
		w, _ := strconv.Atoi(strings.TrimPrefix(filepath.Dir(rel), "w"))
		byWriter[w] = append(byWriter[w], f)
	}
	inUpper := func(f *faultFile) bool {
		_, err := os.Lstat(filepath.Join(upper, f.rel))
		return err == nil
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 6))
	var (
		totalOps, inFlight, firstWriteKills, leftovers, fsyncedBytes, killEIO int
		recoveries                                                            []time.Duration
	)
	start := time.Now()
	for round := 0; round < rounds; round++ {
		storeForm := round%2 == 0
		mountIt(round, storeForm)
		pid := faultDaemonPID(t, mnt)
		if storeForm {
			if rec := faultMountRecord(t, mnt); rec != pid {
				t.Fatalf("round %d: strata mounts says pid %d, the daemon serving %s is %d", round, rec, mnt, pid)
			}
		}
		var holder *os.File
		if round%3 == 0 {
			// A process that keeps a file of the mount open across
			// the crash: the dead mount is then busy.
			var err error
			if holder, err = os.Open(filepath.Join(mnt, "w0", "f2")); err != nil {
				t.Fatal(err)
			}
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		ws := make([]*faultWriter, writers)
		for i := range ws {
			ws[i] = &faultWriter{id: i, mnt: mnt, files: byWriter[i], rng: rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))}
			wg.Add(1)
			go func(w *faultWriter) { defer wg.Done(); w.run(&stop, inUpper) }(ws[i])
		}
		// Half the kills come early, when the writers are still copying
		// up the files the previous round put back in the lower.
		delay := time.Duration(20+rng.IntN(600)) * time.Millisecond
		if rng.IntN(2) == 0 {
			delay = time.Duration(2+rng.IntN(60)) * time.Millisecond
		}
		time.Sleep(delay)
		killedAt := time.Now()
		faultKill(t, pid)
		stop.Store(true)
		faultWithin(t, 30*time.Second, fmt.Sprintf("round %d: writers after the kill", round), wg.Wait)

		// The mount is dead, and the store forgets it.
		var sfs unix.Statfs_t
		if err := unix.Statfs(mnt, &sfs); err != unix.ENOTCONN {
			t.Fatalf("round %d: statfs of the mount after kill -9: %v, want ENOTCONN", round, err)
		}
		if _, err := os.ReadDir(filepath.Join(mnt, "w1")); !errors.Is(err, unix.ENOTCONN) {
			t.Fatalf("round %d: readdir after kill -9: %v, want ENOTCONN", round, err)
		}
		if rec := faultMountRecord(t, mnt); rec != 0 {
			t.Errorf("round %d: strata mounts still lists the dead mount (pid %d)", round, rec)
		}
		for _, w := range ws {
			totalOps += w.done
			if w.pending != nil {
				inFlight++
				if w.pending.firstWrite {
					firstWriteKills++
				}
			}
			// New requests get ENOTCONN, requests queued at the kill
			// ECONNABORTED, and the one a daemon thread was reading
			// from /dev/fuse as it died EIO: the kernel's doing
			// (fuse_dev_do_read), checked with a debug log of every
			// reply, where the daemon never answered EIO.
			if errors.Is(w.err, unix.EIO) {
				killEIO++
			}
			if w.err != nil && !errors.Is(w.err, unix.ENOTCONN) && !errors.Is(w.err, unix.ECONNABORTED) && !errors.Is(w.err, unix.EIO) {
				t.Errorf("round %d: writer %d stopped %v after the kill with %v, want ENOTCONN", round, w.id, w.errAt.Sub(killedAt), w.err)
			}
		}
		leftovers += len(faultWorkLeftovers(t, work))

		// Recovery: strata umount then mount, or a mount straight over the
		// dead one, with the other form than the one that died.
		t0 := time.Now()
		if (round/2)%2 == 0 {
			if r := strata(t, "umount", mnt); r.Code != 0 {
				t.Fatalf("round %d: strata umount of the dead mount (holder open: %v): %v", round, holder != nil, r)
			}
			if isMounted(mnt) {
				t.Fatalf("round %d: strata umount returned 0 but %s is still mounted", round, mnt)
			}
		}
		mountIt(round, !storeForm)
		recoveries = append(recoveries, time.Since(t0))
		pid = faultDaemonPID(t, mnt)
		if holder != nil {
			holder.Close()
		}
		if l := faultWorkLeftovers(t, work); len(l) > 0 {
			t.Fatalf("round %d: work/ not cleaned at mount: %v", round, l)
		}

		// Every file: its last fsynced content, or what the interrupted op allows.
		pending := map[*faultFile]*faultOp{}
		for _, w := range ws {
			if w.pending != nil {
				pending[w.pending.f] = w.pending
			}
		}
		for _, f := range files {
			got, err := os.ReadFile(filepath.Join(mnt, f.rel))
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, f.rel, err)
			}
			op := pending[f]
			ok := bytes.Equal(got, f.cur)
			if !ok && op != nil {
				ok = op.allowed(f.cur, got)
			}
			if !ok {
				desc := "no change in flight"
				if op != nil {
					desc = fmt.Sprintf("%s in flight (first write: %v, %d bytes, size %d)", op.kind, op.firstWrite, len(op.data), op.size)
				}
				t.Fatalf("round %d: %s holds %d bytes (%s) after the crash; last fsynced: %d bytes (%s), lower: %d bytes; %s",
					round, f.rel, len(got), faultDescribe(got, f), len(f.cur), faultDescribe(f.cur, f), len(f.lower), desc)
			}
			if up, err := os.ReadFile(filepath.Join(upper, f.rel)); err == nil && !bytes.Equal(up, got) {
				t.Fatalf("round %d: %s: the upper holds %d bytes, the mount shows %d", round, f.rel, len(up), len(got))
			}
			fsyncedBytes += len(f.cur)
			f.cur = got
		}
		// Nothing else in the writers' directories but their tmp files,
		// each a prefix of what its rename was writing.
		for w := 0; w < writers; w++ {
			ents, err := os.ReadDir(filepath.Join(mnt, fmt.Sprintf("w%d", w)))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				rel := fmt.Sprintf("w%d/%s", w, e.Name())
				if _, ok := lowerContent[rel]; ok {
					continue
				}
				target := fmt.Sprintf("w%d/%s", w, strings.TrimPrefix(e.Name(), ".tmp-"))
				var op *faultOp
				for f, o := range pending {
					if f.rel == target && o.kind == "rename" {
						op = o
					}
				}
				got, err := os.ReadFile(filepath.Join(mnt, rel))
				if err != nil {
					t.Fatal(err)
				}
				if op == nil || len(got) > len(op.data) || !bytes.Equal(got, op.data[:len(got)]) {
					t.Fatalf("round %d: unexpected %s (%d bytes) after the crash", round, rel, len(got))
				}
				if err := os.Remove(filepath.Join(mnt, rel)); err != nil {
					t.Fatal(err)
				}
			}
		}
		// A clean unmount, then (offline) some files go back to their
		// lower version so that the next round copies them up again.
		if r := strata(t, "umount", mnt); r.Code != 0 {
			t.Fatalf("round %d: strata umount: %v", round, r)
		}
		for deadline := time.Now().Add(10 * time.Second); faultAlive(pid); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: daemon %d still running 10 s after strata umount", round, pid)
			}
		}
		for _, f := range files {
			if inUpper(f) && rng.IntN(3) == 0 {
				if err := os.Remove(filepath.Join(upper, f.rel)); err != nil {
					t.Fatal(err)
				}
				f.cur = f.lower
			}
		}
	}
	elapsed := time.Since(start)
	if d := hashLowers(t, lowers); d != lowerDigest {
		t.Errorf("the lower layers changed: digest %s before, %s after", lowerDigest, d)
	}
	slices.Sort(recoveries)
	t.Logf("kill -9: %d rounds survived in %v, %d fsynced changes made (%d MiB of fsynced file content checked), %d kills with a change in flight (%d during a file's first write, i.e. its copy-up), %d staging leftovers in work/ cleaned at remount, %d writers stopped by EIO rather than ENOTCONN, bytes lost: 0; recovery (umount + mount or mount over the dead mount): median %v, max %v",
		rounds, elapsed.Round(time.Second), totalOps, fsyncedBytes>>20, inFlight, firstWriteKills, leftovers, killEIO,
		recoveries[len(recoveries)/2].Round(time.Millisecond), recoveries[len(recoveries)-1].Round(time.Millisecond))
}

// faultDescribe says what content is: empty, the lower's, a prefix of it.
func faultDescribe(b []byte, f *faultFile) string {
	switch {
	case len(b) == 0:
		return "empty"
	case bytes.Equal(b, f.lower):
		return "the lower's"
	case len(b) < len(f.lower) && bytes.Equal(b, f.lower[:len(b)]):
		return "a PREFIX of the lower's: partial copy-up"
	case len(b) > len(f.lower) && bytes.Equal(b[:len(f.lower)], f.lower):
		return "the lower's plus more"
	}
	s := sha256.Sum256(b)
	return "sha256 " + hex.EncodeToString(s[:6])
}

// faultMountO mounts with the fuse-overlayfs compatible form (in the
// background, as containers/storage does) and returns the daemon's pid; the
// mount is removed at cleanup.
func faultMountO(t testing.TB, opts, mnt string) int {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	if r := strataExec(t, defaultTimeout, "-o", opts, mnt); r.Code != 0 {
		t.Fatalf("%v", r)
	}
	return faultDaemonPID(t, mnt)
}

// faultUnmountClean unmounts a mount of ours with strata umount and checks
// that its daemon then exits by itself.
func faultUnmountClean(t testing.TB, mnt string, pid int) {
	t.Helper()
	if r := strata(t, "umount", mnt); r.Code != 0 {
		t.Fatalf("strata umount %s: %v", mnt, r)
	}
	for deadline := time.Now().Add(10 * time.Second); faultAlive(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d still running 10 s after strata umount %s", pid, mnt)
		}
	}
}

// faultTmpfs mounts a tmpfs of size bytes at dir (removed at cleanup).
func faultTmpfs(t testing.TB, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	run(t, 30*time.Second, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir)
}

func faultUsed(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

func faultFileSum(t testing.TB, p string, n int64) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, n)); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestReliabilityENOSPC puts the upper and work dirs on a 64 MiB tmpfs and
// has a 200 MiB lower file written: the copy-up cannot fit. The same steps
// run on the kernel's overlayfs (the reference for every errno) and on
// strata with and without passthrough: the write's open (and truncate,
// chmod) fails, the lower content stays visible and intact, nothing is left
// in upper or work, the daemon keeps serving; a new file that fills the
// tmpfs gets ENOSPC and its removal gives the space back; once the tmpfs is
// grown the copy-up succeeds. Same steps in the long form.
func TestReliabilityENOSPC(t *testing.T) {
	requireCommands(t, "umount")
	const bigSize = 200 << 20
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	if err := os.MkdirAll(filepath.Join(lower, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	// 200 MiB of data that does not repeat at any block boundary.
	block := faultBytes(faultSeed("enospc-big"), 1<<20)
	bf, err := os.Create(filepath.Join(lower, "big"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for i := 0; i < bigSize>>20; i++ {
		copy(block, fmt.Sprintf("%08d", i))
		bf.Write(block)
		h.Write(block)
	}
	if err := bf.Close(); err != nil {
		t.Fatal(err)
	}
	bigSum := hex.EncodeToString(h.Sum(nil))
	for p, c := range map[string]string{"small": "small\n", "sub/x": "x\n"} {
		if err := os.WriteFile(filepath.Join(lower, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lowers := lowerStack{lowers: []string{lower}}
	lowerDigest := hashLowers(t, lowers)

	// steps runs the scenario on the mount at mnt over upper/work on the
	// tmpfs at tfs and returns one line per step with its errno.
	steps := func(t *testing.T, impl, mnt, tfs, upper string, leftovers func() []string) []string {
		var out []string
		step := func(what string, err error) syscall.Errno {
			e := faultErrno(err)
			out = append(out, what+": "+faultErrnoName(e))
			return e
		}
		p := func(rel string) string { return filepath.Join(mnt, rel) }
		noCopy := func(when string) {
			t.Helper()
			if got := faultFileSum(t, p("big"), bigSize+1); got != bigSum {
				t.Errorf("%s, %s: big through the mount is no longer the lower's content", impl, when)
			}
			if _, err := os.Lstat(filepath.Join(upper, "big")); err == nil {
				t.Errorf("%s, %s: a (partial) copy of big is in the upper", impl, when)
			}
			if l := leftovers(); len(l) > 0 {
				t.Errorf("%s, %s: left in work/: %v", impl, when, l)
			}
			if used := faultUsed(t, tfs); used > 1<<20 {
				t.Errorf("%s, %s: %d bytes still used on the upper's tmpfs", impl, when, used)
			}
		}
		open := func(rel string, flags int) error {
			fd, err := unix.Open(p(rel), flags|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}
		step("open big O_WRONLY|O_APPEND", open("big", unix.O_WRONLY|unix.O_APPEND))
		step("open big O_RDWR", open("big", unix.O_RDWR))
		step("truncate big to 100", unix.Truncate(p("big"), 100))
		step("chmod big 0600", unix.Chmod(p("big"), 0o600))
		noCopy("after the failed copy-ups")

		// The mount keeps serving.
		if b, err := os.ReadFile(p("small")); err != nil || string(b) != "small\n" {
			t.Errorf("%s: small after ENOSPC: %q %v", impl, b, err)
		}
		step("write new1 (4 KiB)", os.WriteFile(p("new1"), make([]byte, 4096), 0o644))
		step("mkdir d1", unix.Mkdir(p("d1"), 0o755))
		step("rename new1 d1/new1", unix.Rename(p("new1"), p("d1/new1")))
		if ents, err := os.ReadDir(p("")); err != nil || len(ents) != 4 {
			t.Errorf("%s: root lists %d entries (%v), want big, d1, small, sub", impl, len(ents), err)
		}

		// A new file fills the tmpfs.
		fd, err := unix.Open(p("fill"), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if step("create fill", err) == 0 {
			chunk := make([]byte, 1<<20)
			var werr error
			for n := 0; n < 1<<10 && werr == nil; n++ {
				_, werr = unix.Write(fd, chunk)
			}
			step("write fill until the tmpfs is full", werr)
			step("fsync fill", unix.Fsync(fd))
			unix.Close(fd)
		}
		step("append to small (copy-up) on a full upper", func() error {
			f, err := os.OpenFile(p("small"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("X")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}())
		if b, err := os.ReadFile(p("small")); err != nil || (string(b) != "small\n" && string(b) != "small\nX") {
			t.Errorf("%s: small on a full upper: %q %v", impl, b, err)
		}
		step("create new2 with data on a full upper", os.WriteFile(p("new2"), []byte("new2"), 0o644))
		step("rm fill", os.Remove(p("fill")))
		os.Remove(p("new2"))
		step("append to sub/x (copy-up) after freeing", func() error {
			f, err := os.OpenFile(p("sub/x"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("Y")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}())
		if b, _ := os.ReadFile(p("sub/x")); string(b) != "x\nY" {
			t.Errorf("%s: sub/x after freeing space: %q, want \"x\\nY\"", impl, b)
		}
		noCopy("after the tmpfs was full")

		// More room: the copy-up of big now succeeds.
		run(t, 30*time.Second, "mount", "-o", "remount,size=512m", tfs)
		step("append to big after growing the tmpfs", func() error {
			f, err := os.OpenFile(p("big"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("tail")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}())
		if got := faultFileSum(t, p("big"), bigSize); got != bigSum {
			t.Errorf("%s: big's first 200 MiB after the copy-up differ from the lower's", impl)
		}
		if st, err := os.Stat(filepath.Join(upper, "big")); err != nil || st.Size() != bigSize+4 {
			t.Errorf("%s: big in the upper after the copy-up: %v", impl, err)
		}
		return out
	}

	tfs := filepath.Join(base, "ktmpfs")
	faultTmpfs(t, tfs, 64<<20)
	for _, d := range []string{"upper", "work"} {
		os.Mkdir(filepath.Join(tfs, d), 0o755)
	}
	kmnt := filepath.Join(base, "kmnt")
	kernelOverlay(t, []string{lower}, filepath.Join(tfs, "upper"), filepath.Join(tfs, "work"), kmnt)
	want := steps(t, "kernel overlayfs", kmnt, tfs, filepath.Join(tfs, "upper"), func() []string {
		ents, _ := os.ReadDir(filepath.Join(tfs, "work", "work"))
		var l []string
		for _, e := range ents {
			l = append(l, e.Name())
		}
		return l
	})
	unmount(t, kmnt)
	t.Logf("kernel overlayfs:\n  %s", strings.Join(want, "\n  "))
	if want[0] != "open big O_WRONLY|O_APPEND: ENOSPC" {
		t.Errorf("the kernel's overlayfs gave %q", want[0])
	}

	for _, pt := range []bool{true, false} {
		name := "passthrough"
		if !pt {
			name = "no-passthrough"
		}
		tfs := filepath.Join(base, "tmpfs-"+name)
		faultTmpfs(t, tfs, 64<<20)
		upper, work := filepath.Join(tfs, "upper"), filepath.Join(tfs, "work")
		for _, d := range []string{upper, work} {
			os.Mkdir(d, 0o755)
		}
		mnt := filepath.Join(base, "mnt-"+name)
		opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
		if !pt {
			opts += ",passthrough=0"
		}
		pid := faultMountO(t, opts, mnt)
		got := steps(t, "strata "+name, mnt, tfs, upper, func() []string { return faultWorkLeftovers(t, work) })
		t.Logf("strata (%s):\n  %s", name, strings.Join(got, "\n  "))
		if d := diffLines(want, got, 20); d != "" {
			t.Errorf("strata (%s) and the kernel's overlayfs differ (- kernel, + strata):\n%s", name, d)
		}
		if !faultAlive(pid) {
			t.Fatalf("strata (%s): the daemon died", name)
		}
		faultUnmountClean(t, mnt, pid)
	}
	if d := hashLowers(t, lowers); d != lowerDigest {
		t.Errorf("the lower layer changed")
	}
}

// faultProbe is one operation on a mount whose lower layer was damaged: its
// result is "ok: CONTENT" or the errno's name.
type faultProbe struct {
	name string
	run  func(mnt string) (string, error)
}

func faultReadProbe(rel string) faultProbe {
	return faultProbe{"read " + rel, func(mnt string) (string, error) {
		b, err := os.ReadFile(filepath.Join(mnt, rel))
		return string(b), err
	}}
}

func faultAppendProbe(rel string) faultProbe {
	return faultProbe{"append to " + rel, func(mnt string) (string, error) {
		f, err := os.OpenFile(filepath.Join(mnt, rel), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return "", err
		}
		_, err = f.WriteString("+")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
		b, err := os.ReadFile(filepath.Join(mnt, rel))
		return string(b), err
	}}
}

func faultListProbe(rel string) faultProbe {
	return faultProbe{"readdir " + rel, func(mnt string) (string, error) {
		ents, err := os.ReadDir(filepath.Join(mnt, rel))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " "), err
	}}
}

// TestReliabilityLowerRemoved damages the top lower layer under a live
// mount, after the kernel has looked at everything: a directory removed
// (rm -rf), the whole layer removed, the layer or a directory renamed away,
// permissions taken away (chmod 000). Overlayfs leaves the result of changing
// a lower layer under a mount undefined, short of crashing or hanging; the
// same probes run on the kernel's overlayfs and are logged beside strata's.
// strata must answer every probe within 10 s with the data the layer held
// (a name the kernel remembers may still reach its removed file, which the
// daemon's read-only view of the layer keeps), the data of the layer below
// where the name now resolves there, or an error (ENOENT, ESTALE, EIO);
// never other data. Everything in the other layers and the upper must keep
// working, readdir must list them, failing probes repeated 100 times must not
// leak fds in the daemon, and the daemon must stay up and exit cleanly at
// unmount. Same steps in the long form.
func TestReliabilityLowerRemoved(t *testing.T) {
	requireCommands(t, "umount")
	top := map[string]string{"sub/a": "a in L1", "sub/b": "b in L1", "sub/u": "u in L1 (never looked up)", "top1": "top1 in L1",
		"deep/d1/d2/f": "deep in L1", "shadow": "shadow in L1"}
	bottom := map[string]string{"sub/c": "c in L2", "bot1": "bot1 in L2", "shadow": "shadow in L2"}
	actions := []struct {
		name string
		do   func(l1 string) error
	}{
		{"rm-rf-dir", func(l1 string) error { return os.RemoveAll(filepath.Join(l1, "sub")) }},
		{"rm-rf-layer", func(l1 string) error { return os.RemoveAll(l1) }},
		{"rename-layer", func(l1 string) error { return os.Rename(l1, l1+".moved") }},
		{"rename-dir", func(l1 string) error { return os.Rename(filepath.Join(l1, "sub"), filepath.Join(l1, "sub.moved")) }},
		{"chmod-000", func(l1 string) error {
			for _, p := range []string{"sub/a", "sub", "deep/d1", "top1", ""} {
				if err := os.Chmod(filepath.Join(l1, p), 0); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	var probes []faultProbe
	for _, rel := range []string{"sub/a", "sub/b", "sub/u", "top1", "deep/d1/d2/f", "shadow", "sub/c", "bot1"} {
		probes = append(probes, faultReadProbe(rel))
	}
	probes = append(probes, faultListProbe(""), faultListProbe("sub"), faultListProbe("deep/d1"))
	for _, rel := range []string{"sub/a", "top1", "deep/d1/d2/f", "bot1", "sub/c", "sub/new", "new"} {
		probes = append(probes, faultAppendProbe(rel))
	}
	probes = append(probes, faultProbe{"mkdir sub/newdir", func(mnt string) (string, error) {
		return "", os.Mkdir(filepath.Join(mnt, "sub/newdir"), 0o755)
	}}, faultListProbe("sub"), faultListProbe(""))

	// build makes the two layers under dir and returns them top-first.
	build := func(t *testing.T, dir string) (string, string) {
		l1, l2 := filepath.Join(dir, "L1"), filepath.Join(dir, "L2")
		for l, files := range map[string]map[string]string{l1: top, l2: bottom} {
			for rel, c := range files {
				p := filepath.Join(l, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		return l1, l2
	}
	// exercise looks at everything but sub/u, damages L1 while a reader
	// holds sub/b open, and runs the probes; held is what the open reader
	// then reads.
	exercise := func(t *testing.T, mnt, l1 string, do func(string) error) (results []string, errs map[string]error, outs map[string]string, held string) {
		for rel := range top {
			if rel != "sub/u" {
				os.ReadFile(filepath.Join(mnt, rel))
			}
		}
		for rel := range bottom {
			os.ReadFile(filepath.Join(mnt, rel))
		}
		for _, d := range []string{"", "sub", "deep", "deep/d1", "deep/d1/d2"} {
			os.ReadDir(filepath.Join(mnt, d))
		}
		reader, err := os.Open(filepath.Join(mnt, "sub/b"))
		if err != nil {
			t.Fatal(err)
		}
		defer reader.Close()
		if err := do(l1); err != nil {
			t.Fatalf("damaging the layer: %v", err)
		}
		errs, outs = map[string]error{}, map[string]string{}
		for _, p := range probes {
			var out string
			var err error
			faultWithin(t, 10*time.Second, p.name, func() { out, err = p.run(mnt) })
			key := p.name
			if _, dup := errs[key]; dup || outs[key] != "" {
				key += " (again)"
			}
			errs[key], outs[key] = err, out
			r := faultErrnoName(faultErrno(err))
			if err == nil {
				r = "ok: " + out
			}
			results = append(results, key+" -> "+r)
		}
		b := make([]byte, 64)
		var n int
		faultWithin(t, 10*time.Second, "read of the held fd", func() { n, err = reader.ReadAt(b, 0) })
		held = string(b[:n])
		if err != nil && err != io.EOF {
			held = faultErrnoName(faultErrno(err))
		}
		return results, errs, outs, held
	}

	for _, a := range actions {
		t.Run(a.name, func(t *testing.T) {
			// The kernel's overlayfs on its own copy of the layers.
			kdir := t.TempDir()
			kl1, kl2 := build(t, kdir)
			kmnt := filepath.Join(kdir, "mnt")
			for _, d := range []string{"upper", "work"} {
				os.MkdirAll(filepath.Join(kdir, d), 0o755)
			}
			kernelOverlay(t, []string{kl1, kl2}, filepath.Join(kdir, "upper"), filepath.Join(kdir, "work"), kmnt)
			kres, _, _, kheld := exercise(t, kmnt, kl1, a.do)
			unmount(t, kmnt)

			dir := t.TempDir()
			l1, l2 := build(t, dir)
			upper, work, mnt := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
			for _, d := range []string{upper, work} {
				os.MkdirAll(d, 0o755)
			}
			pid := faultMountO(t, "lowerdir="+l1+":"+l2+",upperdir="+upper+",workdir="+work, mnt)
			sres, errs, outs, held := exercise(t, mnt, l1, a.do)
			var table []string
			for i := range sres {
				table = append(table, fmt.Sprintf("%-60s kernel: %s", sres[i], strings.SplitN(kres[i], " -> ", 2)[1]))
			}
			t.Logf("strata vs kernel after %s:\n  %s\n  held-open sub/b reads: strata %q, kernel %q", a.name, strings.Join(table, "\n  "), held, kheld)

			if held != top["sub/b"] && held != "EIO" && held != "ESTALE" {
				t.Errorf("the reader holding sub/b open reads %q", held)
			}
			okErr := func(err error) bool {
				e := faultErrno(err)
				return e == unix.ENOENT || e == unix.ESTALE || e == unix.EIO
			}
			for key, err := range errs {
				out := outs[key]
				kind, rel, _ := strings.Cut(key, " ")
				rel = strings.TrimPrefix(strings.TrimSuffix(rel, " (again)"), "to ")
				switch {
				case kind == "readdir" || kind == "mkdir":
					if err != nil {
						t.Errorf("%s: %v (the upper and L2 must stay listable and writable)", key, err)
					}
				case bottom[rel] != "" && top[rel] == "": // only in L2
					want := bottom[rel]
					if kind == "append" {
						want += "+"
					}
					if err != nil || out != want {
						t.Errorf("%s: %q %v, want %q (L2 is intact)", key, out, err, want)
					}
				case kind == "append" && top[rel] == "": // new file
					if err != nil || out != "+" {
						t.Errorf("%s: %q %v, want a new file holding \"+\"", key, out, err)
					}
				case err != nil:
					if !okErr(err) {
						t.Errorf("%s: %v, want the data, ENOENT, ESTALE or EIO", key, err)
					}
				default:
					allowed := []string{top[rel], bottom[rel]}
					if kind == "append" {
						allowed = []string{top[rel] + "+", bottom[rel] + "+"}
					}
					if !slices.Contains(allowed, out) || out == "" || out == "+" {
						t.Errorf("%s: %q, want one of %q (what the layers held) or an error", key, out, allowed)
					}
				}
			}
			if ents, err := os.ReadDir(mnt); err != nil {
				t.Errorf("readdir of the root: %v", err)
			} else {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				for _, want := range []string{"bot1", "new", "shadow", "sub"} {
					if !slices.Contains(names, want) {
						t.Errorf("the root lists %v: %s missing", names, want)
					}
				}
			}

			// Failing probes again and again: no fd may leak.
			fds := func() int { ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); return len(ents) }
			before := fds()
			faultWithin(t, 60*time.Second, "repeated probes", func() {
				for i := 0; i < 100; i++ {
					for _, rel := range []string{"sub/a", "sub/u", "top1", "deep/d1/d2/f", "shadow"} {
						os.ReadFile(filepath.Join(mnt, rel))
						os.Stat(filepath.Join(mnt, rel))
						if f, err := os.OpenFile(filepath.Join(mnt, rel), os.O_WRONLY|os.O_APPEND, 0); err == nil {
							f.Close()
						}
					}
					os.ReadDir(filepath.Join(mnt, "sub"))
					os.ReadDir(filepath.Join(mnt, "deep/d1"))
				}
			})
			if after := fds(); after > before+16 {
				t.Errorf("the daemon's open fds grew from %d to %d over 100 rounds of failing probes", before, after)
			}
			if !faultAlive(pid) {
				t.Fatal("the daemon died")
			}
			faultUnmountClean(t, mnt, pid)
		})
	}
}
