package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"

	strfs "github.com/strata-fs/strata/fs"
)

// The fuse-overlayfs compatible invocation:
//
//	strata -o lowerdir=L1:L2,upperdir=U,workdir=W [-f] [-d] DIR
//
// so that containers/storage's mount_program (and scripts written for
// fuse-overlayfs) can run strata unchanged.

// isOverlayInvocation reports whether args are that form (no subcommand).
func isOverlayInvocation(args []string) bool {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-o" || strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "--") {
			return true
		}
		if isGlobalWithValue(a) {
			i++
			continue
		}
		if !strings.HasPrefix(a, "-") {
			return false // a subcommand comes first in the other form
		}
	}
	return false
}

// isGlobalWithValue: a global flag whose value is the next argument.
func isGlobalWithValue(a string) bool {
	return a == "--root" || a == "--log-level" || a == "--log-format"
}

type overlayArgs struct {
	opts       []string
	dir        string
	foreground bool
	debug      bool
}

func parseOverlayArgs(args []string) (*overlayArgs, error) {
	oa := &overlayArgs{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("-o needs options")
			}
			i++
			oa.opts = append(oa.opts, splitOptions(args[i])...)
		case strings.HasPrefix(a, "-o"):
			oa.opts = append(oa.opts, splitOptions(a[2:])...)
		case a == "-f":
			oa.foreground = true
		case isGlobalWithValue(a) && i+1 < len(args):
			i++ // strata's global flags are accepted and have no use here
		case strings.HasPrefix(a, "--root=") || strings.HasPrefix(a, "--log-"):
		case a == "-d" || a == "--debug":
			oa.debug, oa.foreground = true, true
		case strings.HasPrefix(a, "-"):
			return nil, fmt.Errorf("unknown flag %s", a)
		default:
			pos = append(pos, a)
		}
	}
	switch len(pos) {
	case 1:
		oa.dir = pos[0]
	case 2: // "source target", as mount(8) helpers are called
		oa.dir = pos[1]
	default:
		return nil, fmt.Errorf("need exactly one mount point")
	}
	return oa, nil
}

// splitOptions splits a -o value at commas not escaped with a backslash.
func splitOptions(s string) []string { return splitEscaped(s, ',', true) }

// splitLowers splits lowerdir at colons not escaped with a backslash.
func splitLowers(s string) []string { return splitEscaped(s, ':', false) }

// splitEscaped splits s at sep where it is not escaped with a backslash,
// dropping empty fields; keep says whether escapes stay in the fields (for a
// second split) or are resolved.
func splitEscaped(s string, sep byte, keep bool) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			if keep {
				cur.WriteByte(s[i])
			}
			cur.WriteByte(s[i+1])
			i++
		case s[i] == sep:
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func unescapeOpt(s string) string {
	return strings.NewReplacer(`\,`, ",", `\\`, `\`).Replace(s)
}

func runOverlayCompat(args []string) int {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "strata: %v\n", err)
		return 1
	}
	oa, err := parseOverlayArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "strata: %v\nusage: strata -o lowerdir=A:B,upperdir=U,workdir=W [-f] [-d] DIR\n", err)
		return 2
	}
	if oa.debug {
		log.SetLevel(logrus.DebugLevel)
	}
	if handedMount() {
		if err := serveHandedOver(log); err != nil {
			return fail(err)
		}
		return 0
	}
	var daemon *earlyDaemon
	if !inDaemon() && !oa.foreground {
		// Started first, so that its start overlaps what follows.
		if daemon, err = spawnDaemon(args, ""); err != nil {
			return fail(err)
		}
		defer daemon.abandon()
	}
	// As fuse-overlayfs: a plain user keeps owners in the override xattr;
	// root in a user namespace (rootless podman) chowns for real.
	cfg := strfs.Config{Log: log, OverrideStat: os.Geteuid() != 0}
	unprivilegedConfig(&cfg, false)
	// fuse-overlayfs' defaults as root: allow_other, nodev, and setuid
	// bits honoured (containers/storage passes no "suid": a container's
	// sudo or ping relies on it); a plain user's FUSE mount is nosuid
	// whatever it asks.
	mo := strfs.MountOptions{FsName: "strata", AllowOther: os.Geteuid() == 0, Suid: os.Geteuid() == 0}
	for _, o := range oa.opts {
		key, val, _ := strings.Cut(o, "=")
		val = unescapeOpt(val)
		if ok, err := idOption(&cfg.IDs, key, val); ok { // rootless.go
			if err != nil {
				return fail(err)
			}
			continue
		}
		switch key {
		case "lowerdir":
			for _, l := range splitLowers(val) {
				abs, err := filepath.Abs(l)
				if err != nil {
					return fail(err)
				}
				cfg.Lowers = append(cfg.Lowers, abs)
			}
		case "upperdir":
			cfg.Upper = val
		case "workdir":
			cfg.Work = val
		case "ro":
			mo.ReadOnly = true
		case "rw":
			mo.ReadOnly = false
		case "dev":
			mo.Dev = true
		case "nodev":
			mo.Dev = false
		case "suid":
			mo.Suid = true
		case "nosuid":
			mo.Suid = false
		case "allow_other":
			mo.AllowOther = true
		case "debug":
			log.SetLevel(logrus.DebugLevel)
		case "fsname":
			mo.FsName = val
		case "noexec", "exec", "noatime", "relatime", "strictatime", "nodiratime", "context", "fscontext", "defcontext", "rootcontext":
			if key == "noexec" || key == "noatime" {
				mo.Extra = append(mo.Extra, key)
			}
			log.Debugf("option %s passed on / ignored", o)
		case "xattr_permissions":
			// fuse-overlayfs: keep owners and modes in an xattr
			cfg.OverrideStat = val != "0"
		case "passthrough":
			cfg.NoPassthrough = val == "0" || val == "off"
		case "volatile":
			// the kernel's: no syncs, and a marker that refuses the
			// upper after an unclean end
			cfg.Volatile = true
		case "fsync":
			// fuse-overlayfs's fsync=0: no syncs
			cfg.NoSync = val == "0"
		default:
			// fuse-overlayfs options strata does not need (noacl, threaded, static_nlink, xattr_permissions,
			// timeout, redirect_dir, index, ...) are accepted.
			log.Debugf("option %s ignored", o)
		}
	}
	for _, p := range []*string{&cfg.Upper, &cfg.Work} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return fail(err)
			}
			*p = abs
		}
	}
	if cfg.Upper == "" {
		cfg.Work = ""
	}
	if len(cfg.Lowers) == 0 && cfg.Upper == "" {
		return fail(fmt.Errorf("no lowerdir given"))
	}
	if cfg.Upper != "" && cfg.Work == "" {
		return fail(fmt.Errorf("upperdir needs a workdir"))
	}
	dir, err := filepath.Abs(oa.dir)
	if err != nil {
		return fail(err)
	}
	if err := recoverDeadMount(log, dir); err != nil {
		return fail(err)
	}
	if daemon != nil {
		if err := daemon.handOver(handover{Dir: dir, Cfg: cfg, Mount: mo}, nil); err != nil {
			return fail(err)
		}
		return 0
	}
	if err := serve(log, dir, cfg, mo, nil, nil); err != nil {
		return fail(err)
	}
	return 0
}
