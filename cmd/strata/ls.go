package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	strfs "github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/layerstore"
)

var lsFlags struct {
	all    bool
	format string
}

func init() {
	register(&command{
		name:    "ls",
		usage:   "ls REF[:PATH] | ls DIR/PATH [--all] [--format table|json]",
		summary: "list a directory of an image like ls -l, with the layer of each entry (no mount needed)",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVarP(&lsFlags.all, "all", "a", false, "also list what upper layers hide, and the whiteouts")
			addFormatFlag(fs, &lsFlags.format)
		},
		run: runLs,
	})
}

// parseImagePath splits REF[:PATH]: the path starts at the first ":/".
func parseImagePath(arg string) (ref, p string) {
	if i := strings.Index(arg, ":/"); i > 0 {
		return arg[:i], arg[i+1:]
	}
	return arg, "/"
}

type lsEntry struct {
	Name     string    `json:"name"`
	Mode     string    `json:"mode"`
	Nlink    uint64    `json:"nlink"`
	UID      uint32    `json:"uid"`
	GID      uint32    `json:"gid"`
	Size     int64     `json:"size"`
	Rdev     string    `json:"rdev,omitempty"`
	Mtime    time.Time `json:"mtime"`
	Target   string    `json:"target,omitempty"`
	Layer    layerRef  `json:"layer"`
	Hidden   bool      `json:"hidden,omitempty"`
	Whiteout bool      `json:"whiteout,omitempty"`
}

func runLs(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need REF[:PATH] or DIR/PATH"}
	}
	if err := checkFormat(lsFlags.format); err != nil {
		return err
	}
	store, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	var tg *target
	// A path on a strata mount, or else an image reference.
	if abs, err := filepath.Abs(args[0]); err == nil {
		if _, err := os.Lstat(abs); err == nil || strings.HasPrefix(args[0], "/") || strings.HasPrefix(args[0], ".") {
			if t, merr := resolveMountPath(store, args[0]); merr == nil {
				tg = t
			} else if strings.HasPrefix(args[0], "/") || strings.HasPrefix(args[0], ".") {
				return merr
			}
		}
	}
	if tg == nil {
		ref, p := parseImagePath(args[0])
		img, err := store.Resolve(ref)
		if err != nil {
			return err
		}
		tg = &target{store: store, img: img, path: path.Clean("/" + p)}
	}
	v, done, err := tg.view()
	if err != nil {
		return err
	}
	defer done()
	ents, err := v.List(tg.path, lsFlags.all)
	if errors.Is(err, syscall.ENOTDIR) {
		// A file: its own line, from its directory's listing.
		var all []strfs.Entry
		all, err = v.List(path.Dir(tg.path), lsFlags.all)
		ents = nil
		for _, e := range all {
			if e.Name == path.Base(tg.path) {
				ents = append(ents, e)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", tg.path, err)
	}
	out := []lsEntry{}
	for _, e := range ents {
		le := lsEntry{Name: e.Name, Mode: modeString(e.Mode), Nlink: e.Nlink, UID: e.Uid, GID: e.Gid, Size: e.Size,
			Mtime: e.Mtime.UTC(), Target: e.Target, Layer: tg.layer(e.Layer), Hidden: e.Hidden, Whiteout: e.Whiteout}
		if t := e.Mode & syscall.S_IFMT; t == syscall.S_IFCHR || t == syscall.S_IFBLK {
			le.Rdev = fmt.Sprintf("%d,%d", unix.Major(e.Rdev), unix.Minor(e.Rdev))
		}
		out = append(out, le)
	}
	if lsFlags.format == "json" {
		return printJSON(out)
	}
	// ls -l's columns, numbers right-aligned, then the layer and the name.
	rows := make([][]string, 0, len(out))
	width := make([]int, 5)
	for _, e := range out {
		size := strconv.FormatInt(e.Size, 10)
		if e.Rdev != "" {
			size = e.Rdev
		}
		r := []string{strconv.FormatUint(e.Nlink, 10), strconv.FormatUint(uint64(e.UID), 10), strconv.FormatUint(uint64(e.GID), 10), size, tg.label(e.Layer)}
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
		rows = append(rows, r)
	}
	w := bufio.NewWriter(os.Stdout)
	for i, e := range out {
		r := rows[i]
		name := e.Name
		if e.Target != "" {
			name += " -> " + e.Target
		}
		switch {
		case e.Whiteout:
			name += "  (whiteout)"
		case e.Hidden:
			name += "  (hidden)"
		}
		fmt.Fprintf(w, "%s %*s %*s %*s %*s %s %-*s %s\n", e.Mode, width[0], r[0], width[1], r[1], width[2], r[2], width[3], r[3],
			e.Mtime.Format("2006-01-02 15:04"), width[4], r[4], name)
	}
	return w.Flush()
}
