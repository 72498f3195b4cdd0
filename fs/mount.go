package fs

import (
	"fmt"
	"log"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions are the FUSE-level choices for one mount.
type MountOptions struct {
	FsName     string
	AllowOther bool
	// Dev and Suid lift the nodev/nosuid defaults of FUSE mounts.
	Dev, Suid bool
	ReadOnly  bool
	Debug     bool
	// Extra are passed to the kernel as they are (-o style).
	Extra []string
}

// Root builds the root node of a union described by cfg.
func Root(cfg Config) (gofs.InodeEmbedder, *gofs.StableAttr, func(), error) {
	u, err := newUnionFS(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	root := u.newNode()
	var dirs []dirLayer
	var top unix.Stat_t
	for i, l := range u.layers() {
		fd, err := openDirAt(l.root, ".")
		if err != nil {
			for _, d := range dirs {
				unix.Close(d.fd)
			}
			u.close()
			return nil, nil, nil, fmt.Errorf("open layer %s: %w", l.path, err)
		}
		if i == 0 {
			unix.Fstat(fd, &top)
		}
		dirs = append(dirs, dirLayer{l: l, fd: fd})
		if !l.upper && u.isOpaque(fd) {
			break
		}
	}
	root.setDirs(dirs)
	if len(dirs) > 0 {
		root.ovr = u.readOverride(dirs[0].fd, "") // unprivileged owner of the root
	}
	attr := &gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: u.ino(top.Dev, top.Ino)}
	if attr.Ino == 1 || attr.Ino == 0 {
		attr.Ino = 1 << 62
	}
	return root, attr, func() { root.fds.closeAll(); u.close() }, nil
}

// Mount serves the union at dir and returns once the kernel has the mount.
func Mount(dir string, cfg Config, mo MountOptions) (*fuse.Server, error) {
	// Every change to what a name resolves to goes through this daemon,
	// which the kernel sees (or is told, with a notify), so the kernel may
	// cache names and attributes for long, as it does for the kernel's own
	// overlayfs.
	if cfg.EntryTimeout == 0 {
		cfg.EntryTimeout = time.Hour
	}
	if cfg.AttrTimeout == 0 {
		cfg.AttrTimeout = time.Hour
	}
	if cfg.NegativeTimeout == 0 {
		cfg.NegativeTimeout = time.Hour
	}
	root, attr, cleanup, err := Root(cfg)
	if err != nil {
		return nil, err
	}
	// New files get exactly the mode the kernel asks for (it has applied
	// the caller's umask already).
	syscall.Umask(0)
	umaskCleared.Store(true)
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
	et, at, nt := cfg.EntryTimeout, cfg.AttrTimeout, cfg.NegativeTimeout
	o := &gofs.Options{
		MountOptions: fuse.MountOptions{
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
		},
		EntryTimeout:    &et,
		AttrTimeout:     &at,
		NegativeTimeout: &nt,
		NullPermissions: true,
		RootStableAttr:  attr,
	}
	if ro {
		// "ro" in the data string of mount(2) only makes the superblock
		// read-only; the mount itself must say so too (mountinfo, and
		// what fuse-overlayfs and mount -o ro show). The nosuid/nodev
		// options still adjust these flags.
		o.MountOptions.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	}
	if mo.Debug || (cfg.Log != nil && cfg.Log.IsLevelEnabled(logrus.DebugLevel)) {
		// Every FUSE request and reply, through the daemon's logger.
		w := log.Default().Writer()
		if cfg.Log != nil {
			w = cfg.Log.WriterLevel(logrus.DebugLevel)
		}
		o.MountOptions.Debug = true
		o.MountOptions.Logger = log.New(w, "fuse: ", 0)
		o.Logger = log.New(w, "fs: ", 0)
	}
	raw := &handlelessDirs{RawFileSystem: gofs.NewNodeFS(root, o)}
	srv, err := fuse.NewServer(raw, dir, &o.MountOptions)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// The serve loop ends by itself: the mount never answered.
		cleanup()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	done := make(chan struct{})
	released.Store(srv, done)
	go func() {
		srv.Wait()
		cleanup()
		close(done)
	}()
	return srv, nil
}

// released maps a server from Mount to a channel closed once its layers are
// released (after a volatile mount, once the upper is synced).
var released sync.Map

// Wait waits for a server from Mount to end and for its layers to be
// released; a daemon about to exit calls it instead of srv.Wait.
func Wait(srv *fuse.Server) {
	srv.Wait()
	if ch, ok := released.Load(srv); ok {
		<-ch.(chan struct{})
		released.Delete(srv)
	}
}
