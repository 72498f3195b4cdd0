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
	// FuseFd, when not 0, is the /dev/fuse fd of a mount that MountFd made
	// (in the process that started this daemon); Mount serves it.
	FuseFd int
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
func Mount(dir string, cfg Config, mo MountOptions) (srv *fuse.Server, err error) {
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
	if mo.FuseFd != 0 {
		cfg.handedOver = true
		// MountFd checked cfg before mounting; if it fails now all the
		// same, nobody will serve the mount.
		defer func() {
			if err != nil {
				unix.Unmount(dir, unix.MNT_DETACH)
			}
		}()
	}
	root, attr, cleanup, err := Root(cfg)
	if err != nil {
		return nil, err
	}
	// New files get exactly the mode the kernel asks for (it has applied
	// the caller's umask already).
	syscall.Umask(0)
	umaskCleared.Store(true)
	et, at, nt := cfg.EntryTimeout, cfg.AttrTimeout, cfg.NegativeTimeout
	o := &gofs.Options{
		MountOptions:    fuseMountOptions(cfg, mo),
		EntryTimeout:    &et,
		AttrTimeout:     &at,
		NegativeTimeout: &nt,
		NullPermissions: true,
		RootStableAttr:  attr,
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
	raw := &uncachedAttrs{&handlelessDirs{RawFileSystem: gofs.NewNodeFS(root, o)}}
	mountPoint := dir
	if mo.FuseFd != 0 {
		// go-fuse's way to serve a mount made elsewhere.
		mountPoint = fmt.Sprintf("/dev/fd/%d", mo.FuseFd)
		o.MountOptions.DirectMount = false
	}
	srv, err = fuse.NewServer(raw, mountPoint, &o.MountOptions)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err = srv.WaitMount(); err != nil {
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
