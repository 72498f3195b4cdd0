package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

var commitFlags struct {
	message, author string
	reset           bool
}

func init() {
	register(&command{
		name:    "commit",
		usage:   "commit DIR NAME[:TAG] [--message M] [--author A] [--reset]",
		summary: "turn a mount's writable layer into a new layer of a new image",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVarP(&commitFlags.message, "message", "m", "", "comment of the new history entry")
			fs.StringVarP(&commitFlags.author, "author", "a", "", `author, e.g. "Jane Doe <jane@example.com>"`)
			fs.BoolVar(&commitFlags.reset, "reset", false, "then remount DIR on the new image with an empty writable layer (DIR must not be busy)")
		},
		run: runCommit,
	})
}

// runCommit commits the upper of the mount at DIR. The mount itself is not
// touched: it goes on serving its image and writable layer, so a later
// commit again holds every change since the mount was made (as docker
// commit does). --reset instead unmounts DIR, drops its writable layer and
// mounts the new image there with an empty one (the same --upper directory,
// emptied, when the mount had one); that needs DIR not to be busy, and when
// it fails the commit stands and the error says what is left to do.
// Nothing should write to the mount while the layer is written: a file that
// changes under the commit aborts it. SOURCE_DATE_EPOCH, when set, fixes the
// config's time, making commits reproducible.
func runCommit(g *globals, args []string) error {
	if len(args) != 2 {
		return usageError{"need a mount point and NAME[:TAG]"}
	}
	store, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	rec, base, err := upperOf(store, args[0])
	if err != nil {
		return err
	}
	opts := layerstore.CommitOptions{Upper: rec.Upper, Work: rec.Work, Tag: args[1], Message: commitFlags.message,
		Author: commitFlags.author, Log: g.log}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", v, err)
		}
		opts.Created = time.Unix(sec, 0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := store.Commit(ctx, base, opts)
	if err != nil {
		return err
	}
	g.log.WithField("layer", res.DiffID).WithField("entries", res.Stats.Entries).WithField("bytes", res.Size).
		WithField("seconds", fmt.Sprintf("%.2f", time.Since(start).Seconds())).Infof("committed %s as %s", rec.Mountpoint, args[1])
	fmt.Println("sha256:" + res.Image.ID)
	if !commitFlags.reset {
		return nil
	}
	if err := resetMount(g, store, rec, args[1]); err != nil {
		return fmt.Errorf("committed as sha256:%s, but --reset failed: %w", res.Image.ID, err)
	}
	return nil
}

// resetMount remounts rec's mount point on ref with an empty writable layer.
func resetMount(g *globals, store *layerstore.Store, rec *layerstore.MountRecord, ref string) error {
	var extra []string
	if opts, ok := mountOptions(rec.Mountpoint); ok {
		if !opts["nodev"] {
			extra = append(extra, "--dev")
		}
		if !opts["nosuid"] {
			extra = append(extra, "--suid")
		}
	}
	if err := runUmount(g, []string{rec.Mountpoint}); err != nil {
		return fmt.Errorf("unmounting %s (still mounted on the old image): %w", rec.Mountpoint, err)
	}
	containers := filepath.Join(store.Root(), "containers") + "/"
	own := filepath.Dir(rec.Upper)
	if strings.HasPrefix(own, containers) && filepath.Base(rec.Upper) == "upper" {
		// The store's writable layer for the old image: the new mount gets
		// its own, this one goes.
		if err := os.RemoveAll(own); err != nil {
			return err
		}
	} else {
		for _, d := range []string{rec.Upper, rec.Work} {
			if err := emptyDir(d); err != nil {
				return fmt.Errorf("clearing %s: %w", d, err)
			}
		}
		extra = append(extra, "--upper", rec.Upper)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{"--root", g.root, "--log-level", g.logLevel, "mount", ref, rec.Mountpoint}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mounting %s on %s: %v: %s", ref, rec.Mountpoint, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func emptyDir(d string) error {
	ents, err := os.ReadDir(d)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// mountOptions returns the per-mount options (nodev, nosuid, ...) of the
// topmost mount at dir.
func mountOptions(dir string) (map[string]bool, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var found map[string]bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || unescapeMount(fields[4]) != dir {
			continue
		}
		found = map[string]bool{}
		for _, o := range strings.Split(fields[5], ",") {
			found[o] = true
		}
	}
	return found, found != nil
}
