package layerstore

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/vbatts/tar-split/tar/asm"
	"github.com/vbatts/tar-split/tar/storage"
	"golang.org/x/sys/unix"
)

// Export must give back every layer byte for byte: its sha256 is the diffID
// that the image config names, and the config's sha256 is the image ID. The
// store keeps layers extracted, not as tars, so while a layer is extracted a
// tarSplitRecorder notes what the tree cannot give back: the raw bytes of
// every header, every padding and the archive's end, and for each file only
// its name, size and CRC-64. That is the tar-split format
// (github.com/vbatts/tar-split, which containers/storage keeps beside its
// layers too). Export reassembles the tar from it and the layer's files; the
// CRCs and then the diffID check the result.
//
// Recording is best effort: when it fails the import goes on and the layer
// simply has no tar-split file (export then says so).

// tarSplitFile sits beside diff/ and layer.json.
const tarSplitFile = "tar-split.json.gz"

// segmentChunk bounds one raw segment entry (content kept inline: sparse files).
const segmentChunk = 1 << 20

type tarSplitRecorder struct {
	r    io.Reader
	warn func(string, ...any)
	path string
	f    *os.File
	gz   *gzip.Writer
	enc  *json.Encoder
	pos  int
	err  error // first failure: recording stops, extraction goes on

	seg []byte // raw bytes since the last entry

	// the entry whose content is being read
	pending  bool
	name     string
	expected int64 // content bytes the stream holds for it
	inline   bool  // content goes into segments (sparse entries)
	inFile   bool
	n        int64
	crc      hash.Hash64
}

// newTarSplitRecorder records the tar stream r (read through the returned
// recorder) into dir/tar-split.json.gz.
func newTarSplitRecorder(r io.Reader, dir string, warn func(string, ...any)) *tarSplitRecorder {
	rec := &tarSplitRecorder{r: r, warn: warn, path: filepath.Join(dir, tarSplitFile), crc: crc64.New(storage.CRCTable)}
	f, err := os.OpenFile(rec.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		rec.fail(err)
		return rec
	}
	rec.f = f
	rec.gz = gzip.NewWriter(f)
	rec.enc = json.NewEncoder(rec.gz)
	return rec
}

func (rec *tarSplitRecorder) fail(err error) {
	if rec.err != nil {
		return
	}
	rec.err = err
	rec.seg = nil
	if rec.f != nil {
		rec.f.Close()
		os.Remove(rec.path)
		rec.f = nil
	}
	if rec.warn != nil {
		rec.warn("layer tar-split not recorded (export of this layer will not be possible): %v", err)
	}
}

func (rec *tarSplitRecorder) Read(p []byte) (int, error) {
	n, err := rec.r.Read(p)
	if n > 0 && rec.err == nil {
		if rec.inFile && !rec.inline {
			rec.crc.Write(p[:n])
			rec.n += int64(n)
		} else {
			rec.seg = append(rec.seg, p[:n]...)
			if len(rec.seg) >= segmentChunk {
				rec.flushSegment()
			}
		}
	}
	return n, err
}

func (rec *tarSplitRecorder) add(e storage.Entry) {
	if rec.err != nil {
		return
	}
	e.Position = rec.pos
	rec.pos++
	if err := rec.enc.Encode(e); err != nil {
		rec.fail(err)
	}
}

func (rec *tarSplitRecorder) flushSegment() {
	if len(rec.seg) > 0 {
		rec.add(storage.Entry{Type: storage.SegmentType, Payload: rec.seg})
		rec.seg = rec.seg[:0]
	}
}

// finishEntry writes the file entry of the previous header: with its CRC
// when its content was read whole, with size 0 when none was read (the tar
// reader then skips it and the bytes land in the next segment).
func (rec *tarSplitRecorder) finishEntry() {
	if !rec.pending || rec.err != nil {
		rec.pending = false
		return
	}
	rec.pending = false
	e := storage.Entry{Type: storage.FileType}
	e.SetName(rec.name)
	switch {
	case rec.n == 0:
	case rec.n == rec.expected:
		e.Size = rec.n
		e.Payload = rec.crc.Sum(nil)
	default:
		rec.fail(fmt.Errorf("%q: %d of %d content bytes read", rec.name, rec.n, rec.expected))
		return
	}
	rec.add(e)
}

// header is called before tar.Reader.Next: what follows is padding and
// header blocks.
func (rec *tarSplitRecorder) header() {
	rec.inFile = false
	rec.finishEntry()
}

// content is called once Next returned hdr: the raw header bytes become a
// segment, and reads until the next header are hdr's content.
func (rec *tarSplitRecorder) content(hdr *tar.Header) {
	rec.flushSegment()
	rec.pending, rec.inFile = true, true
	rec.name, rec.n = hdr.Name, 0
	rec.crc.Reset()
	rec.expected = hdr.Size
	switch hdr.Typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		rec.expected = 0 // header-only types carry no data whatever Size says
	}
	rec.inline = hdr.Typeflag == tar.TypeGNUSparse
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			rec.inline = true // the stream holds a sparse map, not the file's bytes
		}
	}
}

// finish reads the rest of the stream (end-of-archive blocks, padding) and
// completes the file. A read error is returned; a recording error is not.
func (rec *tarSplitRecorder) finish() error {
	rec.header()
	if _, err := io.Copy(io.Discard, rec); err != nil {
		rec.abort()
		return err
	}
	rec.flushSegment()
	if rec.err != nil {
		return nil
	}
	if err := rec.gz.Close(); err != nil {
		rec.fail(err)
		return nil
	}
	if err := rec.f.Close(); err != nil {
		rec.f = nil
		rec.fail(err)
		return nil
	}
	rec.f = nil
	return nil
}

// abort drops the recording (a failed extraction).
func (rec *tarSplitRecorder) abort() {
	if rec.f != nil {
		rec.f.Close()
		os.Remove(rec.path)
		rec.f = nil
	}
	if rec.err == nil {
		rec.err = errors.New("aborted")
	}
}

// --- reassembly -------------------------------------------------------------

// entryReader unpacks tar-split entries. Unlike storage.NewJSONUnpacker it
// accepts a name twice: a tar may hold duplicates (the later one wins when
// extracting; reassembly then fails on the earlier one's CRC, loudly).
type entryReader struct{ dec *json.Decoder }

func (e *entryReader) Next() (*storage.Entry, error) {
	var x storage.Entry
	if err := e.dec.Decode(&x); err != nil {
		return nil, err
	}
	return &x, nil
}

// layerFiles gives reassembly the content of a file of an extracted layer,
// opened beneath the layer root without following any symlink.
type layerFiles struct{ root int }

func (lf layerFiles) Get(name string) (io.ReadCloser, error) {
	p, err := cleanName(name)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return nil, fmt.Errorf("%q: not a file", name)
	}
	fd, err := openat2(lf.root, p, unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("layer file %q: %w", name, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// ErrNoTarSplit: a layer extracted without tar-split data cannot be given
// back byte for byte.
// A layer already in the store is not extracted again by an import, so to
// get the data: rmi every image using it, gc, then import again.
var ErrNoTarSplit = errors.New("layer has no tar-split data (extracted before strata recorded it, or recording failed): remove the images that use it (rmi), run gc, and import again")

// openLayerTar reassembles the original tar of a stored layer.
func (s *Store) openLayerTar(diffID string) (io.ReadCloser, error) {
	dir := s.layerPath(diffID)
	f, err := os.Open(filepath.Join(dir, tarSplitFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("layer %s: %w", diffID, ErrNoTarSplit)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", diffID, err)
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %s: tar-split: %w", diffID, err)
	}
	root, err := unix.Open(filepath.Join(dir, "diff"), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		gz.Close()
		f.Close()
		return nil, fmt.Errorf("layer %s: %w", diffID, err)
	}
	pr, pw := io.Pipe()
	go func() {
		err := asm.WriteOutputTarStream(layerFiles{root}, &entryReader{json.NewDecoder(gz)}, pw)
		unix.Close(root)
		gz.Close()
		f.Close()
		if err != nil {
			err = fmt.Errorf("layer %s: reassembling the tar: %w", diffID, err)
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}
