package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

var diffFlags struct {
	upper, work, image string
	format             string
}

func init() {
	register(&command{
		name:    "diff",
		usage:   "diff DIR | diff --upper DIR --image REF [--work DIR] [--format table|json]",
		summary: "what a mount's writable layer changed: A/C/D lines like docker diff",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&diffFlags.upper, "upper", "", "a writable layer directory (instead of a mount)")
			fs.StringVar(&diffFlags.image, "image", "", "with --upper: the image it sits on")
			fs.StringVar(&diffFlags.work, "work", "", "with --upper: its work directory (for hard-linked files copied up)")
			addFormatFlag(fs, &diffFlags.format)
		},
		run: runDiff,
	})
}

// upperOf finds the writable layer of the mount at dir and its image.
func upperOf(store *layerstore.Store, dir string) (*layerstore.MountRecord, *layerstore.Image, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	rec, p, err := mountFor(store, abs)
	if err != nil {
		return nil, nil, err
	}
	if p != "/" {
		return nil, nil, fmt.Errorf("%s is inside the mount %s, not its mount point", abs, rec.Mountpoint)
	}
	if rec.ReadOnly || rec.Upper == "" {
		return nil, nil, fmt.Errorf("%s is mounted read-only: it has no writable layer", rec.Mountpoint)
	}
	img, err := store.Resolve(rec.ImageID)
	if err != nil {
		return nil, nil, fmt.Errorf("image of mount %s: %w", rec.Mountpoint, err)
	}
	return rec, img, nil
}

func runDiff(g *globals, args []string) error {
	if err := checkFormat(diffFlags.format); err != nil {
		return err
	}
	store, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	var src layerstore.UpperLayers
	switch {
	case diffFlags.upper != "":
		if len(args) != 0 || diffFlags.image == "" {
			return usageError{"--upper DIR needs --image REF and no other argument"}
		}
		img, err := store.Resolve(diffFlags.image)
		if err != nil {
			return err
		}
		src = layerstore.UpperLayers{Upper: diffFlags.upper, Work: diffFlags.work, Lowers: store.LowerDirs(img)}
	case len(args) == 1:
		rec, img, err := upperOf(store, args[0])
		if err != nil {
			return err
		}
		src = layerstore.UpperLayers{Upper: rec.Upper, Work: rec.Work, Lowers: store.LowerDirs(img)}
	default:
		return usageError{"need a mount point, or --upper DIR --image REF"}
	}
	changes, err := layerstore.Diff(src)
	if err != nil {
		return err
	}
	if diffFlags.format == "json" {
		return printJSON(changes)
	}
	w := bufio.NewWriter(os.Stdout)
	for _, c := range changes {
		fmt.Fprintf(w, "%s %s\n", c.Kind, c.Path)
	}
	return w.Flush()
}
