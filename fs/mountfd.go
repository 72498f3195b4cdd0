package fs

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// fuseMountOptions are go-fuse's options for a mount of cfg.
func fuseMountOptions(cfg Config, mo MountOptions) fuse.MountOptions {
	opts := []string{"default_permissions"}
	if !mo.Dev {
		opts = append(opts, "nodev")
	} else {
		opts = append(opts, "dev")
	}
	if !mo.Suid {
		opts = append(opts, "nosuid")
	} else {
		opts = append(opts, "suid")
	}
	ro := mo.ReadOnly || cfg.Upper == ""
	if ro {
		opts = append(opts, "ro")
	}
	opts = append(opts, mo.Extra...)
	fsname := mo.FsName
	if fsname == "" {
		fsname = "strata"
	}
	o := fuse.MountOptions{
		AllowOther:               mo.AllowOther,
		Options:                  opts,
		FsName:                   fsname,
		Name:                     "strata",
		EnableLocks:              true,
		EnableAcl:                true,
		MaxReadAhead:             1 << 20,
		Debug:                    mo.Debug,
		DirectMount:              true,
		MaxWrite:                 1 << 20,
		ExplicitDataCacheControl: false,
	}
	if ro {
		// "ro" in the data string of mount(2) only makes the superblock
		// read-only; the mount itself must say so too (mountinfo, and
		// what fuse-overlayfs and mount -o ro show). The nosuid/nodev
		// options still adjust these flags.
		o.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	}
	return o
}

// ErrNoDirectMount means this process may not mount a FUSE filesystem by
// itself (it lacks CAP_SYS_ADMIN in its user namespace); a daemon that
// mounts through fusermount3 must do it.
var ErrNoDirectMount = errors.New("no direct FUSE mount")

// MountFd mounts dir for a daemon that another process will start: it first
// does what Mount does before mounting, so that it refuses what Mount would
// refuse (layers that do not open, a workdir on another filesystem, an upper
// a volatile mount left behind) and leaves work/ as the kernel's overlayfs
// does at mount (cleaned; marked when volatile), then mounts and returns the
// /dev/fuse file to hand to that daemon (MountOptions.FuseFd). Requests to
// the mount wait until the daemon answers the kernel's INIT.
//
// strata mount calls it while the daemon it started is still starting, so
// that the mount's preparation overlaps with the daemon's start instead of
// following it.
func MountFd(dir string, cfg Config, mo MountOptions) (*os.File, error) {
	root, _, cleanup, err := Root(cfg)
	if err != nil {
		return nil, err
	}
	// The daemon releases the volatile marker when its mount ends.
	root.(*node).u.volatileSet = false
	cleanup()

	o := fuseMountOptions(cfg, mo)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount %s: open /dev/fuse: %w", dir, err)
	}
	// The flags and data go-fuse's direct mount passes (fuse/mount_linux.go).
	var flags uintptr = unix.MS_NOSUID | unix.MS_NODEV
	if o.DirectMountFlags != 0 {
		flags = o.DirectMountFlags
	}
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", o.MaxWrite),
	}
	for _, opt := range o.Options {
		switch opt {
		case "nodev":
			flags |= unix.MS_NODEV
		case "dev":
			flags &^= unix.MS_NODEV
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "suid":
			flags &^= unix.MS_NOSUID
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "exec":
			flags &^= unix.MS_NOEXEC
		default:
			data = append(data, opt)
		}
	}
	if o.AllowOther {
		data = append(data, "allow_other")
	}
	err = unix.Mount(o.FsName, dir, "fuse."+o.Name, flags, strings.Join(data, ","))
	if err == unix.EPERM {
		unix.Close(fd)
		return nil, ErrNoDirectMount
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), "/dev/fuse"), nil
}
