// Command worker is one fsstress process: integration/load_test.go starts
// several, each with its own seed, against one mount. It chroots into the
// mount first, so that the symlinks the mix makes and follows (absolute
// ones, and the image's own) resolve inside the mount and never reach the
// host's files. It prints its Stats as JSON on stdout; unexpected errnos
// also go to stderr as they happen.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/integration/internal/fsstress"
)

func main() {
	root := flag.String("root", "", "the mount point (chrooted into)")
	dirs := flag.String("dirs", "", "comma-separated directories (relative) whose entries are worked on")
	scratch := flag.String("scratch", "", "this worker's own directory (relative)")
	shared := flag.String("shared", "", "the directory all workers share (relative)")
	seed := flag.Int64("seed", 1, "seed")
	dur := flag.Duration("duration", 10*time.Second, "how long to run")
	ops := flag.Int64("ops", 0, "stop after this many operations (0: duration only)")
	flag.Parse()
	if *root == "" {
		fail("need -root")
	}
	if err := unix.Chroot(*root); err != nil {
		fail("chroot %s: %v", *root, err)
	}
	if err := unix.Chdir("/"); err != nil {
		fail("chdir /: %v", err)
	}
	var ds []string
	for _, d := range strings.Split(*dirs, ",") {
		if d == "" {
			continue
		}
		if _, err := os.Lstat("/" + d); err != nil {
			fmt.Fprintf(os.Stderr, "worker: skipping %s: %v\n", d, err)
			continue
		}
		ds = append(ds, d)
	}
	w, err := fsstress.New(fsstress.Config{
		Root: "/", Dirs: ds, Scratch: *scratch, Shared: *shared,
		Seed: *seed, Duration: *dur, Ops: *ops, Log: os.Stderr, Chrooted: true,
	})
	if err != nil {
		fail("%v", err)
	}
	st := w.Run()
	if err := json.NewEncoder(os.Stdout).Encode(st); err != nil {
		fail("writing stats: %v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "worker: "+format+"\n", args...)
	os.Exit(2)
}
