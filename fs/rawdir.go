package fs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// handlelessDirs serves directories without OPENDIR and RELEASEDIR: answering
// the first OPENDIR with ENOSYS (on kernels that announce
// FUSE_NO_OPENDIR_SUPPORT, 5.1 and later) makes the kernel open every
// directory on its own, with the listing cache kept (FOPEN_KEEP_CACHE |
// FOPEN_CACHE_DIR, what strata asked for anyway). A warm walk then sends no
// request at all, where it sent two per directory (a third of a warm find's
// time on the Debian image).
//
// The kernel then sends the requests that carry a directory handle with
// handle 0, which go-fuse's node bridge cannot serve: each one gets a handle
// of its own for its duration. That is cheap because the merged listing is
// cached on the node and directory offsets are name hashes (a listing
// resumes at any offset in any handle).
type handlelessDirs struct {
	fuse.RawFileSystem
	server *fuse.Server
}

func (r *handlelessDirs) Init(s *fuse.Server) {
	r.server = s
	r.RawFileSystem.Init(s)
}

func (r *handlelessDirs) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if r.server != nil && r.server.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0 {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.OpenDir(cancel, in, out)
}

// withDirHandle runs op with a handle of its own when the kernel sent none.
func (r *handlelessDirs) withDirHandle(cancel <-chan struct{}, hdr *fuse.InHeader, fh *uint64, op func() fuse.Status) fuse.Status {
	if *fh != 0 {
		return op()
	}
	var out fuse.OpenOut
	if st := r.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: *hdr}, &out); st != fuse.OK {
		return st
	}
	*fh = out.Fh
	defer func() {
		r.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: *hdr, Fh: out.Fh})
		*fh = 0
	}()
	return op()
}

func (r *handlelessDirs) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withDirHandle(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return r.RawFileSystem.ReadDir(cancel, in, out)
	})
}

func (r *handlelessDirs) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withDirHandle(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return r.RawFileSystem.ReadDirPlus(cancel, in, out)
	})
}

func (r *handlelessDirs) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return r.withDirHandle(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return r.RawFileSystem.FsyncDir(cancel, in)
	})
}
