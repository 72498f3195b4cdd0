package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/pflag"

	strfs "github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/layerstore"
)

var whichFlags struct {
	image  string
	format string
}

func init() {
	register(&command{
		name:    "which",
		usage:   "which DIR/PATH | which --image REF PATH [--format table|json]",
		summary: "the layer that provides a path, and the layers below that shadow or delete it",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&whichFlags.image, "image", "", "look in this image (no mount needed); PATH is then a path inside it")
			addFormatFlag(fs, &whichFlags.format)
		},
		run: runWhich,
	})
}

// target is a path inside an image, seen either through a mount (with its
// writable layer) or in the image alone.
type target struct {
	store *layerstore.Store
	img   *layerstore.Image
	rec   *layerstore.MountRecord // nil: the image alone
	path  string                  // "/..." inside the image
}

// mountFor finds the strata mount holding abs (the deepest mount point).
func mountFor(store *layerstore.Store, abs string) (*layerstore.MountRecord, string, error) {
	ms, err := store.Mounts()
	if err != nil {
		return nil, "", err
	}
	var best *layerstore.MountRecord
	for i := range ms {
		mp := ms[i].Mountpoint
		if abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/") {
			if best == nil || len(mp) > len(best.Mountpoint) {
				best = &ms[i]
			}
		}
	}
	if best == nil {
		return nil, "", fmt.Errorf("%s is not inside a strata mount of store %s (see strata mounts, or use --image REF)", abs, store.Root())
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(abs, best.Mountpoint), "/")
	return best, "/" + rel, nil
}

// resolveMountPath turns DIR/PATH into its mount record and image.
func resolveMountPath(store *layerstore.Store, arg string) (*target, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return nil, err
	}
	rec, p, err := mountFor(store, abs)
	if err != nil {
		return nil, err
	}
	img, err := store.Resolve(rec.ImageID)
	if err != nil {
		return nil, fmt.Errorf("image of mount %s: %w", rec.Mountpoint, err)
	}
	return &target{store: store, img: img, rec: rec, path: p}, nil
}

// view opens an fs.View of the target's layers, resolving exactly as the
// mount does, the mount's writable layer included.
func (tg *target) view() (*strfs.View, func(), error) {
	cfg := strfs.Config{Lowers: tg.store.LowerDirs(tg.img), LayerInfo: layerInfo(tg.img)}
	unprivilegedConfig(&cfg, true) // rootless.go: owners as the mount shows them
	cleanup := func() {}
	if tg.rec != nil && tg.rec.Upper != "" && !tg.rec.ReadOnly {
		// A View only reads: it can use the mount's own work dir and
		// so sees copies of hard-linked files in work/index.
		cfg.Upper, cfg.Work = tg.rec.Upper, tg.rec.Work
	}
	v, err := strfs.NewView(cfg)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return v, func() { v.Close(); cleanup() }, nil
}

// layerRef describes view layer number n (fs.Hit.Layer, fs.Entry.Layer).
type layerRef struct {
	Upper     bool   `json:"upper,omitempty"`
	Index     int    `json:"index,omitempty"` // 1 is the bottom layer
	DiffID    string `json:"diff_id,omitempty"`
	Digest    string `json:"digest,omitempty"`
	CreatedBy string `json:"created_by,omitempty"`
}

func (tg *target) layer(n int) layerRef {
	hasUpper := tg.rec != nil && tg.rec.Upper != "" && !tg.rec.ReadOnly
	if hasUpper {
		if n == 0 {
			return layerRef{Upper: true}
		}
		n--
	}
	i := len(tg.img.Layers) - 1 - n // view lowers are top-first
	if i < 0 || i >= len(tg.img.Layers) {
		return layerRef{}
	}
	l := tg.img.Layers[i]
	return layerRef{Index: i + 1, DiffID: l.DiffID, Digest: l.Digest, CreatedBy: l.CreatedBy}
}

func (tg *target) label(lr layerRef) string {
	if lr.Upper {
		return "upper"
	}
	return fmt.Sprintf("%d/%d", lr.Index, len(tg.img.Layers))
}

// openTarget opens the store and resolves the arguments of which/ls-like
// commands: DIR/PATH on a mount, or PATH with --image REF.
func openTarget(g *globals, image string, args []string) (*target, error) {
	store, err := layerstore.Open(g.root)
	if err != nil {
		return nil, err
	}
	if image != "" {
		img, err := store.Resolve(image)
		if err != nil {
			return nil, err
		}
		p := "/"
		if len(args) == 1 {
			p = "/" + strings.TrimLeft(args[0], "/")
		}
		return &target{store: store, img: img, path: p}, nil
	}
	return resolveMountPath(store, args[0])
}

type whichLayer struct {
	layerRef
	Status string `json:"status"` // provides, merged, shadowed, whiteout (",opaque" for an opaque directory)
	// Whiteout: this layer deletes the name (status "whiteout"), or did and
	// a layer above put it back (status "shadowed").
	Whiteout bool   `json:"whiteout,omitempty"`
	Mode     string `json:"mode,omitempty"`
	Size     int64  `json:"size"`
}

type whichOut struct {
	Path       string       `json:"path"`
	Mount      string       `json:"mount,omitempty"`
	Image      string       `json:"image"`
	ProvidedBy *whichLayer  `json:"provided_by"` // null when the path is deleted
	Layers     []whichLayer `json:"layers"`      // top-down
}

func runWhich(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need DIR/PATH (on a strata mount), or --image REF and a PATH"}
	}
	if err := checkFormat(whichFlags.format); err != nil {
		return err
	}
	tg, err := openTarget(g, whichFlags.image, args)
	if err != nil {
		return err
	}
	v, done, err := tg.view()
	if err != nil {
		return err
	}
	defer done()
	hits, err := v.Which(tg.path)
	if errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("%s: no layer has it", tg.path)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", tg.path, err)
	}
	out := whichOut{Path: tg.path, Image: "sha256:" + tg.img.ID, Layers: []whichLayer{}}
	if tg.rec != nil {
		out.Mount = tg.rec.Mountpoint
	}
	for _, h := range hits {
		wl := whichLayer{layerRef: tg.layer(h.Layer), Status: h.Kind, Size: h.Size}
		if h.Mode != 0 && h.Kind != "whiteout" {
			wl.Mode = modeString(h.Mode)
		} else {
			wl.Whiteout = h.Kind == "whiteout" || h.Kind == "shadowed"
		}
		out.Layers = append(out.Layers, wl)
		if out.ProvidedBy == nil && strings.HasPrefix(h.Kind, "provides") {
			out.ProvidedBy = &out.Layers[len(out.Layers)-1]
		}
	}
	if whichFlags.format == "json" {
		if err := printJSON(out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\n", tg.path)
		fmt.Fprintln(tw, "LAYER\tSTATUS\tMODE\tSIZE\tDIFF ID\tCREATED BY")
		for _, l := range out.Layers {
			id := "-"
			if l.DiffID != "" {
				id = layerstore.ShortID(l.DiffID)
			}
			status := l.Status
			if l.Whiteout && status != "whiteout" {
				status += " whiteout"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", tg.label(l.layerRef), status, orDash(l.Mode), l.Size, id, oneLine(l.CreatedBy, 60))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if out.ProvidedBy == nil {
		return fmt.Errorf("%s is deleted (%s)", tg.path, out.Layers[0].Status+" in "+tg.label(out.Layers[0].layerRef))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	if s == "" {
		return "-"
	}
	return s
}

// modeString is ls -l's mode column for a raw st_mode.
func modeString(m uint32) string {
	fm := fs.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFDIR:
		fm |= fs.ModeDir
	case syscall.S_IFLNK:
		fm |= fs.ModeSymlink
	case syscall.S_IFCHR:
		fm |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		fm |= fs.ModeDevice
	case syscall.S_IFIFO:
		fm |= fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		fm |= fs.ModeSocket
	}
	if m&syscall.S_ISUID != 0 {
		fm |= fs.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		fm |= fs.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		fm |= fs.ModeSticky
	}
	return lsMode(fm)
}

// lsMode renders like ls: drwxr-sr-t, crw-rw-rw-, ...
func lsMode(fm fs.FileMode) string {
	b := []byte("-rwxrwxrwx")
	switch {
	case fm&fs.ModeDir != 0:
		b[0] = 'd'
	case fm&fs.ModeSymlink != 0:
		b[0] = 'l'
	case fm&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case fm&fs.ModeDevice != 0:
		b[0] = 'b'
	case fm&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case fm&fs.ModeSocket != 0:
		b[0] = 's'
	}
	for i := 0; i < 9; i++ {
		if fm&(1<<uint(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := func(i int, set bool, on, off byte) {
		if set {
			if b[i] == '-' {
				b[i] = off
			} else {
				b[i] = on
			}
		}
	}
	special(3, fm&fs.ModeSetuid != 0, 's', 'S')
	special(6, fm&fs.ModeSetgid != 0, 's', 'S')
	special(9, fm&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}
