package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	strfs "github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/layerstore"
)

// readyFdEnv names the fd on which a background daemon reports that its
// mount is ready ("ok") or why it failed (one line).
const readyFdEnv = "STRATA_READY_FD"

// daemonize re-runs this command in the background, detached from the
// terminal and from the caller's stdout/stderr (tools such as
// containers/storage wait for those to close), and returns once the child
// reports its mount ready. logPath receives the daemon's logs ("" for none).
func daemonize(args []string, logPath string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd, err := startDaemonProcess(args, logPath, readyFdEnv, w)
	if err != nil {
		return err
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		cmd.Process.Release()
		return nil
	}
	// The child failed before (or while) mounting: collect it.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
	}
	if line == "" {
		line = "daemon exited before the mount was ready"
		if logPath != "" {
			line += " (see " + logPath + ")"
		}
	}
	return errors.New(line)
}

// startDaemonProcess starts this command again as a background daemon: in
// a session of its own, stdin from /dev/null, stdout and stderr to logPath
// (or /dev/null), with extra as its fd 3, named by the variable fdEnv.
// extra is closed here either way.
func startDaemonProcess(args []string, logPath, fdEnv string, extra *os.File) (*exec.Cmd, error) {
	defer extra.Close()
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if logPath != "" {
		out, err = os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("open daemon log: %w", err)
	}
	defer out.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, append([]string{}, args...)...)
	cmd.Env = append(os.Environ(), fdEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	cmd.ExtraFiles = []*os.File{extra}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	return cmd, nil
}

// handoffEnv names, in a daemon that startDaemon starts, the fd of a socket
// to that command: the daemon receives the mount's /dev/fuse fd on it
// (SCM_RIGHTS), then answers "r" once it will handle SIGTERM by unmounting.
const handoffEnv = "STRATA_HANDOFF_FD"

// earlySignals, in a daemon that startDaemon starts, receives the signals
// that end a mount from the daemon's first moment (main): a SIGTERM sent
// right after the command returned must unmount, not kill the daemon
// before it serves and leave a dead mount.
var earlySignals chan os.Signal

func catchSignalsEarly() {
	if os.Getenv(handoffEnv) != "" {
		earlySignals = make(chan os.Signal, 4)
		signal.Notify(earlySignals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	}
}

// earlyDaemon is a daemon process started before the mount it will serve
// is prepared: its start (a second Go program's) overlaps the command's own
// work instead of following it. It touches neither the store nor the mount
// point until handOver gives it the mount and everything it needs to serve.
type earlyDaemon struct {
	args    []string
	logPath string
	cmd     *exec.Cmd // nil: not started (no privilege to mount here) or done with
	sock    int
}

// spawnDaemon starts the daemon for a mount of dir. Without the privilege
// to mount here it starts nothing: handOver then lets the daemon mount
// (daemonize). The caller must handOver or abandon.
func spawnDaemon(args []string, logPath string) (*earlyDaemon, error) {
	d := &earlyDaemon{args: args, logPath: logPath, sock: -1}
	if os.Geteuid() != 0 {
		return d, nil
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	cmd, err := startDaemonProcess(args, logPath, handoffEnv, os.NewFile(uintptr(pair[1]), "handoff"))
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	d.cmd, d.sock = cmd, pair[0]
	return d, nil
}

// abandon ends a daemon that will get no mount: without an fd on the
// socket it exits by itself. It does nothing after a handOver.
func (d *earlyDaemon) abandon() {
	if d == nil || d.cmd == nil {
		return
	}
	cmd := d.cmd
	d.cmd = nil
	unix.Shutdown(d.sock, unix.SHUT_RDWR)
	unix.Close(d.sock)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
	}
}

// handover is what the daemon gets with the mount's /dev/fuse fd.
type handover struct {
	Dir   string
	Cfg   strfs.Config
	Mount strfs.MountOptions
	// StoreRoot, when set, is the store whose record of this mount the
	// daemon removes once the mount is gone.
	StoreRoot string
}

// handOver mounts dir in this process (strfs.MountFd), hands the daemon the
// /dev/fuse fd with what it serves, and returns once the daemon has them and
// handles signals. Requests wait until the daemon serves. record, if not
// nil, notes the mount with the daemon's pid before the command returns.
// Without the privilege to mount here, the daemon mounts instead
// (daemonize).
func (d *earlyDaemon) handOver(h handover, record func(pid int) error) error {
	if d.cmd == nil {
		return daemonize(d.args, d.logPath)
	}
	f, err := strfs.MountFd(h.Dir, h.Cfg, h.Mount)
	if errors.Is(err, strfs.ErrNoDirectMount) {
		d.abandon()
		return daemonize(d.args, d.logPath)
	}
	if err != nil {
		d.abandon()
		return err
	}
	defer f.Close()
	cmd := d.cmd
	fail := func(err error) error {
		cmd.Process.Kill()
		d.abandon()
		if uerr := unix.Unmount(h.Dir, unix.MNT_DETACH); uerr != nil {
			err = fmt.Errorf("%w (and unmount %s: %v)", err, h.Dir, uerr)
		}
		return err
	}
	payload, err := json.Marshal(h)
	if err != nil {
		return fail(fmt.Errorf("hand the mount to the daemon: %w", err))
	}
	if err := unix.Sendmsg(d.sock, []byte{'f'}, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		return fail(fmt.Errorf("hand the mount to the daemon: %w", err))
	}
	for rest := payload; len(rest) > 0; {
		n, err := unix.Write(d.sock, rest)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("hand the mount to the daemon: %w", err))
		}
		rest = rest[n:]
	}
	if record != nil {
		if err := record(cmd.Process.Pid); err != nil {
			return fail(err)
		}
	}
	answer := make([]byte, 1)
	n := 0
	// poll(2) is not restarted after a signal handler, whatever its flags.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		fds := []unix.PollFd{{Fd: int32(d.sock), Events: unix.POLLIN}}
		k, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if k == 1 {
			n, _ = unix.Read(d.sock, answer)
		}
		break
	}
	if n != 1 || answer[0] != 'r' {
		line := "daemon exited before it served the mount"
		if d.logPath != "" {
			line += " (see " + d.logPath + ")"
		}
		return fail(errors.New(line))
	}
	unix.Close(d.sock)
	d.cmd = nil
	cmd.Process.Release()
	return nil
}

// receiveMount takes the mount's /dev/fuse fd and what to serve from the
// command that started this daemon, and tells it the daemon has them.
func receiveMount(v string) (int, *handover, error) {
	os.Unsetenv(handoffEnv)
	sock, err := strconv.Atoi(v)
	if err != nil || sock <= 0 {
		return 0, nil, fmt.Errorf("%s=%q: not an fd", handoffEnv, v)
	}
	f := os.NewFile(uintptr(sock), "handoff")
	defer f.Close()
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return 0, nil, fmt.Errorf("receive the mount: %w", err)
	}
	if n == 0 {
		return 0, nil, errors.New("the mount command gave up before handing over its mount")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return 0, nil, fmt.Errorf("receive the mount: no fd (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return 0, nil, fmt.Errorf("receive the mount: no fd (%v)", err)
	}
	fail := func(err error) (int, *handover, error) {
		unix.Close(fds[0])
		return 0, nil, fmt.Errorf("receive the mount: %w", err)
	}
	// The configuration follows the fd as one JSON value (handOver).
	h := &handover{}
	if err := json.NewDecoder(io.LimitReader(f, 16<<20)).Decode(h); err != nil {
		return fail(err)
	}
	if _, err := f.Write([]byte{'r'}); err != nil {
		return fail(err)
	}
	return fds[0], h, nil
}

// serveHandedOver is the daemon of a mount that a command prepared and
// made (handOver): it serves what it was given.
func serveHandedOver(log *logrus.Logger) error {
	fd, h, err := receiveMount(os.Getenv(handoffEnv))
	if err != nil {
		return err
	}
	cfg, mo := h.Cfg, h.Mount
	cfg.Log, mo.FuseFd = log, fd
	var onExit func()
	if h.StoreRoot != "" {
		onExit = func() {
			if err := layerstore.RemoveMountIn(h.StoreRoot, h.Dir); err != nil {
				log.Warn(err)
			}
		}
	}
	return serve(log, h.Dir, cfg, mo, nil, onExit)
}

// handedMount reports whether this process is a daemon that startDaemon
// started: its mount point may be mounted already, and until the daemon
// serves it anything that touches it waits forever.
func handedMount() bool { return os.Getenv(handoffEnv) != "" }

// inDaemon reports whether this process is the background child.
func inDaemon() bool { return os.Getenv(readyFdEnv) != "" || os.Getenv(handoffEnv) != "" }

// reportReady tells a waiting parent how the mount went.
func reportReady(err error) {
	v := os.Getenv(readyFdEnv)
	if v == "" {
		return
	}
	os.Unsetenv(readyFdEnv)
	fd, convErr := strconv.Atoi(v)
	if convErr != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if err == nil {
		fmt.Fprintln(f, "ok")
	} else {
		fmt.Fprintln(f, strings.ReplaceAll(err.Error(), "\n", " "))
	}
	f.Close()
}

// serve mounts and serves until unmounted or signalled; onMounted runs once
// the kernel has the mount (to record it), onExit after it is gone.
func serve(log *logrus.Logger, dir string, cfg strfs.Config, mo strfs.MountOptions, onMounted func() error, onExit func()) error {
	raiseFileLimit(log)
	if os.Getenv("GOGC") == "" {
		// Most of the daemon's heap is one node per name the kernel
		// remembers, live until it forgets them; collecting at +50%
		// instead of +100% keeps a 100k-file walk under 100 MB of RSS
		// for a few percent more GC work.
		debug.SetGCPercent(50)
	}
	if p := os.Getenv("STRATA_CPUPROFILE"); p != "" {
		// A CPU profile of the daemon's whole life, for tuning.
		if f, err := os.Create(p); err != nil {
			log.Warnf("cpu profile: %v", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			log.Warnf("cpu profile: %v", err)
		} else {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	if p := os.Getenv("STRATA_MEMPROFILE"); p != "" {
		// SIGUSR2 writes a heap profile of the live mount, for tuning.
		usr2 := make(chan os.Signal, 1)
		signal.Notify(usr2, syscall.SIGUSR2)
		go func() {
			for range usr2 {
				f, err := os.Create(p)
				if err == nil {
					runtime.GC()
					err = pprof.WriteHeapProfile(f)
					f.Close()
				}
				if err != nil {
					log.Warnf("heap profile: %v", err)
				}
			}
		}()
	}
	srv, err := strfs.Mount(dir, cfg, mo)
	if err != nil {
		reportReady(err)
		return err
	}
	if onMounted != nil {
		if err := onMounted(); err != nil {
			srv.Unmount()
			reportReady(err)
			return err
		}
	}
	unmount := func() error {
		if mo.FuseFd != 0 {
			// go-fuse knows the mount only as /dev/fd/N.
			return unix.Unmount(dir, 0)
		}
		return srv.Unmount()
	}
	log.Infof("mounted %s (%d lower layers, %s)", dir, len(cfg.Lowers), writableText(cfg))
	switch {
	case !layerstore.Privileged():
		log.Infof("passthrough off: it needs CAP_SYS_ADMIN in the initial user namespace; file data goes through the daemon and the page cache")
	case cfg.NoPassthrough:
		log.Infof("passthrough off (asked for)")
	}
	if cfg.Rootless {
		log.Infof("unprivileged: whiteouts and opaque directories in user.overlay.* xattrs or .wh. files")
	}
	if cfg.OverrideStat {
		log.Infof("owners, modes and devices kept in %s (unprivileged)", strfs.OverrideXattr)
	}
	if !cfg.IDs.Identity() {
		log.Infof("id mapping: %s", cfg.IDs)
	}
	reportReady(nil)
	logGoroutinesOnSignal(log)
	sigs := earlySignals
	if sigs == nil {
		sigs = make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	}
	go func() {
		for s := range sigs {
			log.Infof("%v: unmounting %s", s, dir)
			if err := unmount(); err != nil {
				// Busy: detach it from the namespace; the kernel
				// finishes once the last user leaves.
				log.Warnf("unmount %s: %v; detaching lazily", dir, err)
				if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
					exec.Command("fusermount3", "-u", "-z", dir).Run()
				}
			}
		}
	}()
	strfs.Wait(srv)
	signal.Stop(sigs)
	if onExit != nil {
		onExit()
	}
	log.Infof("unmounted %s", dir)
	return nil
}

// logGoroutinesOnSignal makes SIGUSR1 log the daemon's goroutine count (and,
// at debug level, their stacks), so that a test or an operator can tell a
// leak from a busy mount without a debugger.
func logGoroutinesOnSignal(log *logrus.Logger) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			log.Infof("SIGUSR1: %d goroutines", runtime.NumGoroutine())
			if log.IsLevelEnabled(logrus.DebugLevel) {
				var b strings.Builder
				pprof.Lookup("goroutine").WriteTo(&b, 1)
				log.Debugf("goroutines:\n%s", b.String())
			}
		}
	}()
}

func writableText(cfg strfs.Config) string {
	if cfg.Upper == "" {
		return "read-only"
	}
	return "upper " + cfg.Upper
}

// raiseFileLimit lifts the soft fd limit to the hard one: every directory
// the kernel remembers holds one fd per layer.
func raiseFileLimit(log *logrus.Logger) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			log.Debugf("raise RLIMIT_NOFILE: %v", err)
		}
	}
}

// unmountDir unmounts a strata mount, also one whose daemon died
// ("transport endpoint is not connected"). A dead mount that some process
// still holds open (EBUSY) is detached lazily: it can serve nobody any more,
// and the kernel frees it when the last holder lets go.
func unmountDir(dir string) error {
	var errs []string
	if os.Geteuid() == 0 {
		if err := unix.Unmount(dir, 0); err == nil {
			return nil
		} else {
			errs = append(errs, err.Error())
			if err == unix.EINVAL {
				return fmt.Errorf("%s is not a mount point", dir)
			}
		}
	}
	out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput()
	if err == nil {
		return nil
	}
	errs = append(errs, strings.TrimSpace(string(out)))
	if deadMount(dir) {
		if err := detachMount(dir); err == nil {
			return nil
		} else {
			errs = append(errs, err.Error())
		}
	}
	return fmt.Errorf("unmount %s: %s", dir, strings.Join(errs, "; "))
}

// deadMount reports whether dir is a FUSE mount whose daemon is gone: the
// kernel answers ENOTCONN (ECONNABORTED while aborting). statfs always asks
// the daemon, where stat may be answered from cached attributes.
func deadMount(dir string) bool {
	fstype, ok := mountInfoFor(dir)
	if !ok || !strings.HasPrefix(fstype, "fuse") {
		return false
	}
	var st unix.Statfs_t
	err := unix.Statfs(dir, &st)
	return err == unix.ENOTCONN || err == unix.ECONNABORTED
}

// detachMount lazily unmounts dir (umount -l).
func detachMount(dir string) error {
	if os.Geteuid() == 0 {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err == nil {
			return nil
		}
	}
	if out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("detach %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// recoverDeadMount clears a dead FUSE mount at dir (its daemon was killed)
// so that a new mount can take the mount point without a reboot; stacking
// the new mount on the dead one would leave it behind for ever.
func recoverDeadMount(log *logrus.Logger, dir string) error {
	if handedMount() {
		return nil // the mount there is ours, waiting for us to serve it
	}
	for i := 0; i < 8 && deadMount(dir); i++ { // one layer per dead mount stacked there
		log.Warnf("%s: the daemon of the mount there is gone (transport endpoint is not connected): detaching it", dir)
		if err := unmountDir(dir); err != nil {
			return fmt.Errorf("recovering dead mount %s: %w", dir, err)
		}
	}
	return nil
}

// isMountpoint reports whether dir is a FUSE mount point of strata.
func mountInfoFor(dir string) (fstype string, ok bool) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		if unescapeMount(f[4]) != dir {
			continue
		}
		for i := 6; i < len(f); i++ {
			if f[i] == "-" && i+1 < len(f) {
				fstype = f[i+1]
			}
		}
		ok = true
	}
	return fstype, ok
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
