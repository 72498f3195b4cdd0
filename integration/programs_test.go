//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// busyboxMount imports the busybox fixture and mounts it writable.
func busyboxMount(t *testing.T, extra ...string) string {
	t.Helper()
	requireCommands(t, "import", "mount", "umount")
	fx := fixture(t, "busybox")
	mustStrata(t, "import", filepath.Join(fx, "busybox-oci"), "--tag", "fixture/busybox:latest")
	mnt := filepath.Join(t.TempDir(), "mnt")
	mount(t, "fixture/busybox:latest", mnt, extra...)
	return mnt
}

// TestRealProgramsInMount drives a writable mount of the busybox fixture
// with the programs people run in a rootfs.
func TestRealProgramsInMount(t *testing.T) {
	mnt := busyboxMount(t, "--dev")
	t.Run("chroot", func(t *testing.T) {
		out := run(t, 30*time.Second, "chroot", mnt, "/bin/sh", "-c",
			"echo hello > /tmp/x && cat /tmp/x && rm /data/hello.txt && ls /data | wc -l && echo ok > /dev/null && id -u")
		if !strings.HasPrefix(out, "hello\n") || !strings.HasSuffix(strings.TrimSpace(out), "0") {
			t.Errorf("chroot output %q", out)
		}
		if _, err := os.Lstat(filepath.Join(mnt, "data", "hello.txt")); !os.IsNotExist(err) {
			t.Errorf("file removed in the chroot still visible: %v", err)
		}
	})
	t.Run("tar", func(t *testing.T) {
		dst := filepath.Join(mnt, "tarcopy")
		os.Mkdir(dst, 0o755)
		run(t, 60*time.Second, "sh", "-c", "tar -C "+mnt+" -cf - etc bin home root | tar -C "+dst+" -xpf -")
		for _, d := range []string{"etc", "bin", "home", "root"} {
			sameTree(t, "tar copy of "+d, treeManifest(t, filepath.Join(mnt, d)), treeManifest(t, filepath.Join(dst, d)))
		}
	})
	t.Run("cp -a", func(t *testing.T) {
		run(t, 60*time.Second, "cp", "-a", filepath.Join(mnt, "etc"), filepath.Join(mnt, "etc-copy"))
		sameTree(t, "cp -a of etc", treeManifest(t, filepath.Join(mnt, "etc")), treeManifest(t, filepath.Join(mnt, "etc-copy")))
	})
	t.Run("find", func(t *testing.T) {
		ref := filepath.Join(fixture(t, "busybox"), "busybox-reference", "rootfs")
		want := run(t, 60*time.Second, "sh", "-c", "cd "+ref+" && find usr bin sbin | sort")
		got := run(t, 60*time.Second, "sh", "-c", "cd "+mnt+" && find usr bin sbin | sort")
		if want != got {
			t.Errorf("find differs: %s", diffLines(strings.Split(want, "\n"), strings.Split(got, "\n"), 20))
		}
	})
	t.Run("git", func(t *testing.T) {
		requireTool(t, "git")
		repo := filepath.Join(mnt, "data", "repo")
		os.MkdirAll(repo, 0o755)
		os.WriteFile(filepath.Join(repo, "a.txt"), []byte("one\n"), 0o644)
		git := func(args ...string) string {
			return run(t, 60*time.Second, "git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		}
		git("init", "-q")
		git("add", ".")
		git("commit", "-qm", "first")
		os.WriteFile(filepath.Join(repo, "a.txt"), []byte("two\n"), 0o644)
		git("commit", "-qam", "second")
		if out := git("log", "--oneline"); strings.Count(out, "\n") != 2 {
			t.Errorf("git log: %q", out)
		}
		git("gc", "-q")
		git("fsck", "--strict")
	})
	t.Run("go build", func(t *testing.T) {
		goBin := goTool()
		mod := filepath.Join(mnt, "root", "hello")
		os.MkdirAll(mod, 0o755)
		os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module hello\n\ngo 1.21\n"), 0o644)
		os.WriteFile(filepath.Join(mod, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"built in strata\") }\n"), 0o644)
		cache := filepath.Join(mnt, "root", "gocache")
		out := run(t, 5*time.Minute, "env", "GOCACHE="+cache, "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local",
			goBin, "-C", mod, "build", "-o", filepath.Join(mod, "hello"), ".")
		_ = out
		if got := run(t, 30*time.Second, filepath.Join(mod, "hello")); got != "built in strata\n" {
			t.Errorf("built binary printed %q", got)
		}
	})
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
}

// TestDaemonSignalsAndDeadMount: SIGTERM unmounts cleanly; a daemon killed
// with SIGKILL leaves "transport endpoint is not connected", which strata
// umount clears and strata mount can then reuse.
func TestDaemonSignalsAndDeadMount(t *testing.T) {
	mnt := busyboxMount(t)
	pid := daemonPID(t, mnt)
	syscall.Kill(pid, syscall.SIGTERM)
	waitUnmounted(t, mnt)

	mount(t, "fixture/busybox:latest", mnt)
	pid = daemonPID(t, mnt)
	os.WriteFile(filepath.Join(mnt, "data", "kept.txt"), []byte("kept"), 0o644)
	syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(mnt, "data")); err == nil {
		t.Fatalf("mount still answers after SIGKILL of its daemon")
	}
	mustStrata(t, "umount", mnt)
	if isMounted(mnt) {
		t.Fatalf("dead mount still there after strata umount")
	}
	mount(t, "fixture/busybox:latest", mnt)
	if b, err := os.ReadFile(filepath.Join(mnt, "data", "kept.txt")); err != nil || string(b) != "kept" {
		t.Errorf("upper after remount: %q %v", b, err)
	}
	mustStrata(t, "umount", mnt)
}

func daemonPID(t *testing.T, mnt string) int {
	t.Helper()
	r := mustStrata(t, "mounts", "--format", "json")
	var ms []struct {
		Mountpoint string
		PID        int
	}
	if err := json.Unmarshal([]byte(r.Stdout), &ms); err != nil {
		t.Fatalf("mounts --format json: %v\n%s", err, r.Stdout)
	}
	for _, m := range ms {
		if m.Mountpoint == mnt {
			if m.PID <= 0 {
				t.Fatalf("no pid for %s", mnt)
			}
			return m.PID
		}
	}
	t.Fatalf("%s not in strata mounts: %s", mnt, r.Stdout)
	return 0
}

func waitUnmounted(t *testing.T, mnt string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if !isMounted(mnt) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s still mounted", mnt)
}
