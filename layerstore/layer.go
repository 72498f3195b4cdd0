package layerstore

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// detectCompression looks at the first bytes of a blob; media types are
// not trusted (skopeo labels plain tars as gzip).
func detectCompression(b []byte) string {
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		return "gzip"
	case len(b) >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd:
		return "zstd"
	}
	return "none"
}

// hashReader hashes and counts what passes through it, and reports progress.
type hashReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	progress func(int64)
	last     int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if n > 0 {
		if h.h != nil {
			h.h.Write(p[:n])
		}
		h.n += int64(n)
		if h.progress != nil && h.n-h.last >= 256<<10 {
			h.progress(h.n)
			h.last = h.n
		}
	}
	return n, err
}

func (h *hashReader) digest() string { return "sha256:" + hex.EncodeToString(h.h.Sum(nil)) }

// ratioReader stops a decompression bomb: once more than floor bytes came
// out, out/in may not exceed maxRatio.
type ratioReader struct {
	r        io.Reader
	in       *hashReader
	out      int64
	maxRatio int64
	floor    int64
}

func (r *ratioReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.out += int64(n)
	if r.maxRatio > 0 && r.out > r.floor && r.out > r.maxRatio*max(r.in.n, 1) {
		return n, fmt.Errorf("%w: %d bytes from %d compressed (limit %d:1)", ErrDecompressionBomb, r.out, r.in.n, r.maxRatio)
	}
	return n, err
}

// corruptReader classifies decompressor errors: a short stream is
// ErrTruncated (by classify), anything else ErrInvalidImage.
type corruptReader struct {
	r    io.Reader
	comp string
}

func (c corruptReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w: corrupt %s stream: %w", ErrInvalidImage, c.comp, err)
	}
	return n, err
}

// ctxReader stops a stream when the import is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type layerResult struct {
	src         *layerSource
	diffID      string
	blobDigest  string
	blobSize    int64
	size        int64
	compression string
	dir         string // staging dir holding diff/, layer.json, contents.jsonl
}

type extractOptions struct {
	maxRatio int64
	floor    int64
	root0    bool
	warn     func(string, ...any)
	progress func(done int64)
}

// classify maps stream errors onto the package's sentinels.
func classify(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTruncated):
		return fmt.Errorf("%w: %w", ErrTruncated, err)
	case errors.Is(err, ErrInvalidImage):
	case errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrFieldTooLong), errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum),
		// archive/tar's other format errors (sparse maps that lie) are unexported.
		strings.Contains(err.Error(), "archive/tar: "):
		return fmt.Errorf("%w: %w", ErrInvalidImage, err)
	}
	return err
}

// extractLayer streams one blob once: hash the compressed bytes, detect
// the compression from its magic, decompress, hash the tar (diffID) and
// extract it into dest/diff, all in the same pass. It then checks both
// digests against what the image declares.
func extractLayer(ctx context.Context, src *layerSource, dest string, o extractOptions) (*layerResult, error) {
	return streamLayer(ctx, src, dest, o)
}

// decompressAhead runs the reading, hashing and decompression of a
// compressed layer in a goroutine of its own, a megabyte ahead of the
// extractor, so that on a multi-core machine the inflate and the two
// sha256s overlap the file creation syscalls instead of taking turns with
// them. stop ends the goroutine (at once, when the extractor gave up
// early) and must be called before r is read again.
func decompressAhead(r io.Reader, comp string) (ahead io.Reader, stop func()) {
	if comp == "none" {
		return r, func() {}
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		_, err := io.CopyBuffer(pw, struct{ io.Reader }{r}, buf)
		pw.CloseWithError(err) // nil: the reader sees io.EOF
	}()
	return bufio.NewReaderSize(pr, 1<<20), func() {
		pr.CloseWithError(errAheadStopped)
		<-done
	}
}

var errAheadStopped = errors.New("layer stream: extraction stopped")

// streamLayer is extractLayer; with dest == "" it only hashes and verifies.
func streamLayer(ctx context.Context, src *layerSource, dest string, o extractOptions) (res *layerResult, err error) {
	rc, size, err := src.open()
	if err != nil {
		return nil, invalid("layer %s: %v", src.name, err)
	}
	defer rc.Close()
	if src.size >= 0 && size != src.size {
		return nil, fmt.Errorf("layer %s: %w: blob has %d bytes, manifest says %d", src.name, ErrDigestMismatch, size, src.size)
	}
	in := &hashReader{r: ctxReader{ctx, rc}, h: sha256.New(), progress: o.progress}
	br := bufio.NewReaderSize(in, 1<<20)
	magic, _ := br.Peek(4)
	comp := detectCompression(magic)
	var dr io.Reader = br
	switch comp {
	case "gzip":
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("layer %s: gzip: %w", src.name, classify(err))
		}
		defer gz.Close()
		dr = &ratioReader{r: corruptReader{gz, comp}, in: in, maxRatio: o.maxRatio, floor: o.floor}
	case "zstd":
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(256<<20))
		if err != nil {
			return nil, fmt.Errorf("layer %s: zstd: %w", src.name, err)
		}
		defer zr.Close()
		dr = &ratioReader{r: corruptReader{zr, comp}, in: in, maxRatio: o.maxRatio, floor: o.floor}
	}
	// A plain blob is the tar itself: its digest is the diffID, hashed once.
	out := &hashReader{r: dr}
	if comp != "none" {
		out.h = sha256.New()
	}

	// A corrupt blob usually shows up as a bad tar header or a bad
	// compressed stream before the end; when the manifest names the blob's
	// digest, the rest of the raw blob is hashed so that the error names
	// the digest mismatch, the root cause.
	blobErr := func(err error) error {
		if ctx.Err() != nil || !(errors.Is(err, ErrInvalidImage) || errors.Is(err, ErrTruncated)) {
			return err
		}
		// A damaged compressed stream often decodes to garbage first and
		// reports its own error (checksum, bad block) only further on:
		// that error names the problem, the tar error is its symptom.
		var derr error
		if comp != "none" {
			_, derr = io.Copy(io.Discard, out)
			if !errors.Is(derr, ErrInvalidImage) && !errors.Is(derr, io.ErrUnexpectedEOF) {
				derr = nil
			}
		}
		if src.digest != "" {
			if _, cerr := io.Copy(io.Discard, br); cerr == nil && in.digest() != src.digest {
				return fmt.Errorf("layer %s: %w: blob is %s, manifest says %s (%v)", src.name, ErrDigestMismatch, in.digest(), src.digest, err)
			}
		}
		if derr != nil {
			return fmt.Errorf("layer %s: %w (tar: %v)", src.name, classify(derr), err)
		}
		return err
	}
	n := 0
	var x *extractor
	if dest != "" {
		tarIn, stop := decompressAhead(out, comp)
		x, n, err = extractTar(src, dest, tarIn, o)
		if err == nil {
			// The rest of the tar (end blocks, padding) belongs to
			// the diffID.
			_, err = io.Copy(io.Discard, tarIn)
			if err != nil {
				err = fmt.Errorf("layer %s: %w", src.name, classify(err))
			}
		}
		stop()
		if err != nil {
			return nil, blobErr(err)
		}
	}
	// The rest of the blob belongs to its digest (and, when only hashing,
	// all of the tar to the diffID).
	if _, err := io.Copy(io.Discard, out); err != nil {
		return nil, blobErr(fmt.Errorf("layer %s: %w", src.name, classify(err)))
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, fmt.Errorf("layer %s: %w", src.name, classify(err))
	}
	diffID := in.digest()
	if out.h != nil {
		diffID = out.digest()
	}
	res = &layerResult{src: src, diffID: diffID, blobDigest: in.digest(), blobSize: in.n, size: out.n, compression: comp, dir: dest}
	if o.progress != nil {
		o.progress(in.n)
	}
	if src.digest != "" && res.blobDigest != src.digest {
		return nil, fmt.Errorf("layer %s: %w: blob is %s, manifest says %s", src.name, ErrDigestMismatch, res.blobDigest, src.digest)
	}
	if src.diffID != "" && res.diffID != src.diffID {
		return nil, fmt.Errorf("layer %s: %w: uncompressed content is %s, config says %s", src.name, ErrDigestMismatch, res.diffID, src.diffID)
	}
	if comp == "none" && src.digest == "" {
		res.blobDigest = "" // the "blob" is the tar itself; nothing to record
	}
	if dest == "" {
		return res, nil
	}
	// The content manifest for fsck.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, e := range x.entries {
		if err := enc.Encode(e); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dest, "contents.jsonl"), buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	meta := layerMeta{DiffID: res.diffID, Size: res.size, Entries: n, OpaqueXattr: x.opaqueXattr, Imported: time.Now().UTC()}
	if res.blobDigest != "" {
		meta.BlobDigests = []string{res.blobDigest}
	}
	meta.Compressions = []string{comp}
	mb, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(dest, "layer.json"), append(mb, '\n'), 0o600); err != nil {
		return nil, err
	}
	return res, nil
}

// extractTar applies the tar stream r to dest/diff.
func extractTar(src *layerSource, dest string, r io.Reader, o extractOptions) (*extractor, int, error) {
	diff := filepath.Join(dest, "diff")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return nil, 0, err
	}
	rootFD, err := unix.Open(diff, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(rootFD)
	x := newExtractor(rootFD, o.root0, o.warn)
	defer x.close()
	// The raw headers are recorded so that export can give the tar back
	// byte for byte (tarsplit.go).
	rec := newTarSplitRecorder(r, dest, o.warn)
	defer rec.abort()
	tr := tar.NewReader(rec)
	n := 0
	for {
		rec.header()
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("layer %s: entry %d: %w", src.name, n+1, classify(err))
		}
		n++
		rec.content(hdr)
		if err := x.apply(hdr, tr); err != nil {
			return nil, 0, fmt.Errorf("layer %s: %w", src.name, classify(err))
		}
	}
	if err := rec.finish(); err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", src.name, classify(err))
	}
	if err := x.finish(); err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", src.name, err)
	}
	return x, n, nil
}
