package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	strfs "github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/layerstore"
)

var mountFlags struct {
	upper      string
	readOnly   bool
	foreground bool
	dev, suid  bool
	noPT       bool
	volatile   bool
	atLayer    int
	layer      int
	ids        idFlags
}

func init() {
	register(&command{
		name:    "mount",
		usage:   "mount REF DIR [--upper DIR] [--read-only] [--at-layer N | --layer N] [-f] [--dev] [--suid] [--uidmap C:H:N] [--gidmap C:H:N] [--squash-to-root | --squash-to-uid N --squash-to-gid N]",
		summary: "mount an image with a writable layer (background by default)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&mountFlags.upper, "upper", "", "writable layer directory (default: one kept in the store for this image and mount point)")
			fs.BoolVar(&mountFlags.readOnly, "read-only", false, "no writable layer")
			fs.BoolVarP(&mountFlags.foreground, "foreground", "f", false, "stay in the foreground")
			fs.BoolVar(&mountFlags.dev, "dev", false, "allow device nodes (FUSE mounts are nodev otherwise)")
			fs.BoolVar(&mountFlags.suid, "suid", false, "honour setuid/setgid bits (nosuid otherwise)")
			fs.IntVar(&mountFlags.atLayer, "at-layer", 0, "mount the image as it stood after its Nth layer (1 = bottom), read-only")
			fs.IntVar(&mountFlags.layer, "layer", 0, "mount only layer N's own diff (1 = bottom), whiteouts shown as such, read-only")
			fs.BoolVar(&mountFlags.noPT, "no-passthrough", false, "serve file data from the daemon instead of FUSE passthrough")
			fs.BoolVar(&mountFlags.volatile, "volatile", false, "never sync the writable layer (faster copy-up; after a machine crash it must be thrown away, as with the kernel's overlay volatile option)")
			mountFlags.ids.register(fs)
		},
		run: runMount,
	})
}

func runMount(g *globals, args []string) error {
	if len(args) != 2 {
		return usageError{"need an image reference and a mount point"}
	}
	if handedMount() {
		return serveHandedOver(g.log)
	}
	ref := args[0]
	dir, err := filepath.Abs(args[1])
	if err != nil {
		return err
	}
	background := !inDaemon() && !mountFlags.foreground
	var daemon *earlyDaemon
	if background {
		// Started first, so that its start overlaps what follows. Should
		// that fail (say, no log file), the store's own error comes first.
		if daemon, err = spawnDaemon(os.Args[1:], mountLogPath(g.root, dir)); err == nil {
			defer daemon.abandon()
		}
	}
	if err := recoverDeadMount(g.log, dir); err != nil {
		return err
	}
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("mount point %s: %w", dir, err)
	} else if !st.IsDir() {
		return fmt.Errorf("mount point %s: not a directory", dir)
	}
	store, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	// A registry reference that is not in the store is pulled first (mountpull.go).
	img, err := resolveOrPull(g, store, ref)
	if err != nil {
		return err
	}
	cfg := strfs.Config{Lowers: store.LowerDirs(img), LayerInfo: layerInfo(img), Log: g.log, NoPassthrough: mountFlags.noPT, Volatile: mountFlags.volatile}
	// The store's layers were extracted with owners in the override xattr
	// when we lack privileges (layerstore/rootless.go): present them.
	unprivilegedConfig(&cfg, true)
	if cfg.IDs, err = mountFlags.ids.mapping(); err != nil {
		return err
	}
	nl := len(img.Layers)
	switch {
	case mountFlags.atLayer != 0 && mountFlags.layer != 0:
		return usageError{"--at-layer and --layer exclude each other"}
	case mountFlags.atLayer != 0:
		if mountFlags.atLayer < 1 || mountFlags.atLayer > nl {
			return usageError{fmt.Sprintf("--at-layer %d: the image has layers 1 to %d", mountFlags.atLayer, nl)}
		}
		// lowers are top-first: drop the layers above N
		cfg.Lowers, cfg.LayerInfo = cfg.Lowers[nl-mountFlags.atLayer:], cfg.LayerInfo[nl-mountFlags.atLayer:]
		mountFlags.readOnly = true
	case mountFlags.layer != 0:
		if mountFlags.layer < 1 || mountFlags.layer > nl {
			return usageError{fmt.Sprintf("--layer %d: the image has layers 1 to %d", mountFlags.layer, nl)}
		}
		i := nl - mountFlags.layer
		cfg.Lowers, cfg.LayerInfo, cfg.Raw = cfg.Lowers[i:i+1], cfg.LayerInfo[i:i+1], true
		mountFlags.readOnly = true
	}
	if !mountFlags.readOnly {
		if mountFlags.upper != "" {
			up, err := filepath.Abs(mountFlags.upper)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(up, 0o755); err != nil {
				return fmt.Errorf("upper %s: %w", up, err)
			}
			// The work dir must sit on the upper's filesystem.
			work := filepath.Join(filepath.Dir(up), "."+filepath.Base(up)+".work")
			if err := os.MkdirAll(work, 0o700); err != nil {
				return fmt.Errorf("work dir %s: %w", work, err)
			}
			cfg.Upper, cfg.Work = up, work
		} else {
			sum := sha256.Sum256([]byte(dir))
			name := layerstore.ShortID(img.ID) + "-" + hex.EncodeToString(sum[:6])
			if cfg.Upper, cfg.Work, err = store.ContainerDirs(name); err != nil {
				return err
			}
		}
	}
	mo := strfs.MountOptions{
		FsName:     "strata:" + ref,
		AllowOther: os.Geteuid() == 0,
		Dev:        mountFlags.dev,
		Suid:       mountFlags.suid,
		ReadOnly:   mountFlags.readOnly,
	}
	rec := layerstore.MountRecord{Mountpoint: dir, ImageID: img.ID, Ref: ref, Upper: cfg.Upper, Work: cfg.Work, PID: os.Getpid(), ReadOnly: cfg.Upper == ""}
	if background {
		if daemon == nil {
			if daemon, err = spawnDaemon(os.Args[1:], mountLogPath(g.root, dir)); err != nil {
				return err
			}
			defer daemon.abandon()
		}
		return daemon.handOver(handover{Dir: dir, Cfg: cfg, Mount: mo, StoreRoot: store.Root()},
			func(pid int) error {
				rec.PID = pid
				return store.AddMount(rec)
			})
	}
	return serve(g.log, dir, cfg, mo,
		func() error { return store.AddMount(rec) },
		func() {
			if err := store.RemoveMount(dir); err != nil {
				g.log.Warn(err)
			}
		})
}

// mountLogPath is where the daemon of a mount at dir logs: under the store
// (made here, as the daemon starts before the store is opened).
func mountLogPath(root, dir string) string {
	abs, err := filepath.Abs(root)
	if err != nil {
		abs = root
	}
	logDir := filepath.Join(abs, "logs")
	os.MkdirAll(logDir, 0o700)
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(logDir, "mount-"+hex.EncodeToString(sum[:8])+".log")
}

// layerInfo describes the image's layers top-down, for user.strata.layer:
// "layer N/M sha256:... created_by".
func layerInfo(img *layerstore.Image) []string {
	n := len(img.Layers)
	out := make([]string, 0, n)
	for i := n - 1; i >= 0; i-- {
		l := img.Layers[i]
		s := fmt.Sprintf("layer %d/%d %s", i+1, n, l.DiffID)
		if l.CreatedBy != "" {
			s += " " + l.CreatedBy
		}
		out = append(out, s)
	}
	return out
}
