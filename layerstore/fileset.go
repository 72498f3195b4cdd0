package layerstore

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// fileSet is the read side of an archive: a directory or an uncompressed tar,
// read with random access so that several layers stream at once.
type fileSet interface {
	// open returns the named file (symlinks inside the set are followed,
	// never out of it) and its size.
	open(name string) (io.ReadCloser, int64, error)
	exists(name string) bool
	// topNames lists the entries of the top directory.
	topNames() []string
	Close() error
}

// dirSet reads a directory through os.Root, so symlinks cannot leave it.
type dirSet struct{ root *os.Root }

func openDirSet(dir string) (*dirSet, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &dirSet{root: r}, nil
}

func (d *dirSet) open(name string) (io.ReadCloser, int64, error) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: not a regular file", name)
	}
	return f, st.Size(), nil
}

func (d *dirSet) exists(name string) bool {
	_, err := d.root.Stat(name)
	return err == nil
}

func (d *dirSet) topNames() []string {
	f, err := d.root.Open(".")
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	return names
}

func (d *dirSet) Close() error { return d.root.Close() }

type tarEntry struct {
	typ  byte
	off  int64
	size int64
	link string
}

// tarSet indexes an uncompressed tar once; files are then read with
// io.SectionReader at their offsets.
type tarSet struct {
	f       *os.File
	entries map[string]*tarEntry
}

func openTarSet(f *os.File) (*tarSet, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	t := &tarSet{f: f, entries: map[string]*tarEntry{}}
	// tar.Reader skips entry data with Seek when its reader is a Seeker and
	// does not buffer, so the file offset after Next is the data's offset.
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("reading archive: %w: %w", ErrTruncated, err)
			}
			return nil, fmt.Errorf("reading archive: %w: %w", ErrUnknownFormat, err)
		}
		name := tarSetName(hdr.Name)
		if name == "" || hdr.Typeflag == tar.TypeGNUSparse {
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		t.entries[name] = &tarEntry{typ: hdr.Typeflag, off: off, size: hdr.Size, link: hdr.Linkname}
	}
	return t, nil
}

func tarSetName(n string) string {
	n = path.Clean("/" + n)
	return strings.TrimPrefix(n, "/")
}

// resolve follows symlinks and hard links component by component, staying
// inside the archive.
func (t *tarSet) resolve(name string) (*tarEntry, error) {
	parts := strings.Split(tarSetName(name), "/")
	hops := 0
	cur := ""
	for i := 0; i < len(parts); i++ {
		next := path.Join(cur, parts[i])
		e := t.entries[next]
		if e != nil && (e.typ == tar.TypeSymlink || e.typ == tar.TypeLink) {
			hops++
			if hops > 40 {
				return nil, fmt.Errorf("%s: too many links", name)
			}
			var target string
			if e.typ == tar.TypeLink || strings.HasPrefix(e.link, "/") {
				target = path.Clean(e.link)
			} else {
				target = path.Join(cur, e.link)
			}
			target = strings.TrimPrefix(target, "/")
			if target == ".." || strings.HasPrefix(target, "../") {
				return nil, fmt.Errorf("%s: link points out of the archive", name)
			}
			rest := parts[i+1:]
			parts = append(strings.Split(target, "/"), rest...)
			cur, i = "", -1
			continue
		}
		cur = next
	}
	e := t.entries[cur]
	if e == nil {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	return e, nil
}

func (t *tarSet) open(name string) (io.ReadCloser, int64, error) {
	e, err := t.resolve(name)
	if err != nil {
		return nil, 0, err
	}
	if e.typ != tar.TypeReg {
		return nil, 0, fmt.Errorf("%s: not a regular file", name)
	}
	return io.NopCloser(io.NewSectionReader(t.f, e.off, e.size)), e.size, nil
}

func (t *tarSet) exists(name string) bool {
	_, err := t.resolve(name)
	return err == nil
}

func (t *tarSet) topNames() []string {
	seen := map[string]bool{}
	var out []string
	for n := range t.entries {
		top, _, _ := strings.Cut(n, "/")
		if !seen[top] {
			seen[top] = true
			out = append(out, top)
		}
	}
	return out
}

func (t *tarSet) Close() error { return t.f.Close() }

// readAll reads a small file (metadata) with a size cap.
func readSmall(set fileSet, name string) ([]byte, error) {
	rc, size, err := set.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	const max = 64 << 20
	if size > max {
		return nil, fmt.Errorf("%s: %d bytes is too large for metadata", name, size)
	}
	b, err := io.ReadAll(io.LimitReader(rc, max))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}
