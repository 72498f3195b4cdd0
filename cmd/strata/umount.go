package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

func init() {
	register(&command{
		name:    "umount",
		usage:   "umount DIR",
		summary: "unmount a strata mount (also one whose daemon died)",
		run:     runUmount,
	})
	register(&command{
		name:    "mounts",
		usage:   "mounts [--format json]",
		summary: "list strata mounts with their image and writable layer",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&mountsFormat, "format", "table", "output format: table or json")
		},
		run: runMounts,
	})
}

var mountsFormat string

func runUmount(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need a mount point"}
	}
	dir, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	store, storeErr := layerstore.Open(g.root)
	var rec *layerstore.MountRecord
	if storeErr == nil {
		if ms, err := store.Mounts(); err == nil {
			for i := range ms {
				if ms[i].Mountpoint == dir {
					rec = &ms[i]
				}
			}
		}
	}
	if _, mounted := mountInfoFor(dir); !mounted {
		if store != nil {
			store.RemoveMount(dir)
		}
		return fmt.Errorf("%s is not mounted", dir)
	}
	if err := unmountDir(dir); err != nil {
		return err
	}
	// Wait for the daemon to finish (it removes its own record).
	if rec != nil && rec.PID > 0 {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if !processAlive(rec.PID) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if store != nil {
		store.RemoveMount(dir)
	}
	return nil
}

// processAlive reports whether pid runs (a zombie no longer serves).
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func runMounts(g *globals, args []string) error {
	if len(args) != 0 {
		return usageError{"takes no arguments"}
	}
	store, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	ms, err := store.Mounts()
	if err != nil {
		return err
	}
	if mountsFormat == "json" {
		if ms == nil {
			ms = []layerstore.MountRecord{}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ms)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "MOUNTPOINT\tIMAGE\tREF\tUPPER\tPID")
	for _, m := range ms {
		up := m.Upper
		if m.ReadOnly || up == "" {
			up = "(read-only)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", m.Mountpoint, layerstore.ShortID(m.ImageID), m.Ref, up, m.PID)
	}
	return tw.Flush()
}
