package layerstore

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LayerStats says what WriteLayer wrote.
type LayerStats struct {
	Entries   int   // tar entries, whiteouts and opaque markers included
	Whiteouts int   // .wh.NAME entries
	Opaque    int   // .wh..wh..opq markers
	Bytes     int64 // file content bytes
}

// ErrChangedDuringCommit: a file changed size or identity while it was read.
var ErrChangedDuringCommit = errors.New("file changed while the layer was written; try again when nothing writes to the mount")

// WriteLayer writes what the upper changes as an OCI layer tar: applied over
// the lowers it gives the tree the mount shows. The tar is deterministic:
// entries in path order (a directory before its content, names sorted
// bytewise), PAX headers, numeric owners only, modification times with
// nanoseconds and no access or change times, whiteouts and opaque markers
// with time 0. Owners, modes, xattrs (not overlay's own), hard links (within
// the layer), symlinks, devices and fifos are kept; sockets are skipped.
func WriteLayer(w io.Writer, src UpperLayers) (*LayerStats, error) {
	u, err := openUnion(src)
	if err != nil {
		return nil, err
	}
	defer u.close()
	recs, err := u.changes()
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(w)
	e := &layerWriter{u: u, tw: tw, links: map[[2]uint64]string{}, buf: make([]byte, 1<<20)}
	for i := range recs {
		if err := e.write(&recs[i]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &e.stats, nil
}

type layerWriter struct {
	u     *unionSet
	tw    *tar.Writer
	links map[[2]uint64]string // (dev, ino) of a multiply-linked file -> its first name
	buf   []byte
	stats LayerStats
}

var epoch = time.Unix(0, 0)

func (e *layerWriter) marker(name string) error {
	e.stats.Entries++
	return e.tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, ModTime: epoch, Format: tar.FormatPAX})
}

func (e *layerWriter) write(r *changeRec) error {
	name := strings.TrimPrefix(r.path, "/")
	switch r.emit {
	case emitNone:
		return nil
	case emitWhiteout:
		dir, base := path.Split(name)
		e.stats.Whiteouts++
		return e.marker(dir + ".wh." + base)
	}
	st := &r.st
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:  tar.FormatPAX,
	}
	var parent, fd = -1, -1
	defer func() {
		if parent >= 0 {
			unix.Close(parent)
		}
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	dirRel, base := path.Split(r.rel)
	var err error
	// Every open is beneath the layer root without following symlinks.
	if parent, err = openat2(r.root, orDot(strings.TrimSuffix(dirRel, "/")), unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	var now unix.Stat_t
	if err := fstatat(parent, base, &now); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	if now.Ino != st.Ino || now.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		return fmt.Errorf("%s: %w", r.path, ErrChangedDuringCommit)
	}
	xattrName := base // xattrs through the parent unless we hold the object itself
	xattrFd := parent
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if st.Nlink > 1 {
			if first, ok := e.links[key]; ok {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				e.stats.Entries++
				return e.tw.WriteHeader(hdr)
			}
			e.links[key] = name
		}
		hdr.Typeflag = tar.TypeReg
		if fd, err = openat2(parent, base, unix.O_RDONLY); err != nil {
			return fmt.Errorf("%s: %w", r.path, err)
		}
		xattrFd, xattrName = fd, ""
		var fst unix.Stat_t
		if err := unix.Fstat(fd, &fst); err != nil {
			return fmt.Errorf("%s: %w", r.path, err)
		}
		if fst.Ino != st.Ino || fst.Size != st.Size {
			return fmt.Errorf("%s: %w", r.path, ErrChangedDuringCommit)
		}
		hdr.Size = st.Size
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		b := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(parent, base, b)
		if err != nil {
			return fmt.Errorf("%s: %w", r.path, err)
		}
		hdr.Linkname = string(b[:n])
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil // sockets have no tar form
	}
	xs, err := e.u.xattrsOf(xattrFd, xattrName)
	if err != nil {
		return fmt.Errorf("%s: xattrs: %w", r.path, err)
	}
	xs = applyOverride(hdr, overrideOf(xattrFd, xattrName), xs) // rootless.go
	for _, kv := range xs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+kv[0]] = kv[1]
	}
	if err := e.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	e.stats.Entries++
	if hdr.Typeflag == tar.TypeDir && r.opaque {
		e.stats.Opaque++
		if err := e.marker(hdr.Name + ".wh..wh..opq"); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	f := os.NewFile(uintptr(fd), r.path)
	fd = -1
	defer f.Close()
	n, err := io.CopyBuffer(e.tw, io.LimitReader(f, hdr.Size), e.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("%s: %w", r.path, ErrChangedDuringCommit)
	}
	e.stats.Bytes += n
	return nil
}
