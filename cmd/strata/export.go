package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

var exportFlags struct{ format string }

func init() {
	register(&command{
		name:    "export",
		usage:   "export REF FILE|- [--format docker|oci]",
		summary: "write an image as a docker save archive or an OCI layout tar (- for stdout)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&exportFlags.format, "format", "docker", "docker (docker save / docker-archive) or oci (OCI image layout as a tar)")
		},
		run: runExport,
	})
}

func runExport(g *globals, args []string) error {
	if len(args) != 2 {
		return usageError{"need REF and FILE (- for stdout)"}
	}
	if f := exportFlags.format; f != layerstore.ExportDocker && f != layerstore.ExportOCI {
		return usageError{fmt.Sprintf("--format: %q is not docker or oci", f)}
	}
	store, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	img, err := store.Resolve(args[0])
	if err != nil {
		return err
	}
	// Named by a tag: that tag only (as docker save does); else all its tags.
	tags := img.RepoTags
	if t, ok := store.TagOf(args[0]); ok {
		tags = []string{t}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := layerstore.ExportOptions{Format: exportFlags.format, RepoTags: tags}
	if args[1] == "-" {
		if isTerminal(os.Stdout) {
			return fmt.Errorf("refusing to write a tar to a terminal; redirect stdout or name a file")
		}
		return store.Export(ctx, img, os.Stdout, o)
	}
	// A temporary file beside FILE, renamed when complete: a failed export
	// leaves nothing.
	dst, err := filepath.Abs(args[1])
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := store.Export(ctx, img, f, o); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	g.log.Infof("exported %s (%s) to %s", layerstore.ShortID(img.ID), exportFlags.format, dst)
	return nil
}
