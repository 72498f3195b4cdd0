package layerstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ImportOptions tune Import. The zero value is usable.
type ImportOptions struct {
	// Tag is an extra NAME[:TAG] for the imported image; the archive must
	// then hold exactly one image.
	Tag string
	// Parallel is how many layers are extracted at once (default 3).
	Parallel int
	// MaxRatio caps decompressed/compressed bytes of a compressed layer
	// once more than RatioFloor bytes came out (defaults 1000 and 256 MiB;
	// a negative MaxRatio disables the cap).
	MaxRatio   int64
	RatioFloor int64
	// Progress, when set, receives per-layer events (from several goroutines).
	Progress func(ProgressEvent)
	// Log receives warnings and per-layer info lines; nil discards them.
	Log logrus.FieldLogger
}

// ProgressState is the kind of a ProgressEvent.
type ProgressState int

const (
	LayerStarted  ProgressState = iota // Total is the blob size
	LayerProgress                      // Done bytes of the blob read
	LayerDone                          // extracted and verified
	LayerReused                        // already in the store: nothing extracted
	LayerVerified                      // already in the store; blob read only to verify a new digest
	LayerFailed                        // Err says why
)

// ProgressEvent reports on one layer.
type ProgressEvent struct {
	Layer string // digest (or archive path when the format gives none)
	State ProgressState
	Total int64
	Done  int64
	Err   error
}

// ImportResult says what Import did.
type ImportResult struct {
	Format    string // docker-archive, oci, legacy-v1
	Images    []*Image
	Extracted int   // layers extracted
	Reused    int   // layers already in the store
	Bytes     int64 // uncompressed bytes extracted
	Warnings  []string
}

const (
	defaultMaxRatio   = 1000
	defaultRatioFloor = 256 << 20
)

type layerJob struct {
	key    string
	src    *layerSource
	verify bool // already stored: hash the blob, extract nothing
	res    *layerResult
}

// Import reads a docker-archive, OCI layout (dir or tar) or legacy v1
// archive, extracts and verifies every layer not yet stored, and then
// makes the images and their tags visible. On any error the store is
// unchanged.
func (s *Store) Import(ctx context.Context, path string, opts ImportOptions) (*ImportResult, error) {
	log := opts.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	if opts.Parallel <= 0 {
		opts.Parallel = min(3, max(runtime.NumCPU(), 1))
	}
	if opts.MaxRatio == 0 {
		opts.MaxRatio = defaultMaxRatio
	}
	if opts.RatioFloor == 0 {
		opts.RatioFloor = defaultRatioFloor
	}
	fail := func(err error) (*ImportResult, error) { return nil, fmt.Errorf("import %s: %w", path, err) }
	var extraTag *parsedRef
	if opts.Tag != "" {
		pr, err := parseTagRef(opts.Tag)
		if err != nil {
			return fail(err)
		}
		extraTag = &pr
	}
	st, err := s.newStaging("import")
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	maxRatio := opts.MaxRatio
	if maxRatio < 0 {
		maxRatio = 0
	}
	src, err := openSource(path, st.dir, extractOptions{maxRatio: maxRatio, floor: opts.RatioFloor})
	if err != nil {
		return fail(err)
	}
	defer src.Close()
	if extraTag != nil && len(src.images) != 1 {
		return fail(fmt.Errorf("--tag needs an archive with one image, this one has %d: %w", len(src.images), ErrInvalidReference))
	}
	res := &ImportResult{Format: src.format}
	for _, w := range src.warnings {
		log.Warn(w)
		res.Warnings = append(res.Warnings, w)
	}

	// Plan: one job per distinct layer.
	var jobs []*layerJob
	byKey := map[string]*layerJob{}
	for _, img := range src.images {
		for _, l := range img.layers {
			key := l.diffID
			if key == "" {
				key = "path:" + l.name
			}
			if byKey[key] != nil {
				continue
			}
			j := &layerJob{key: key, src: l}
			if l.diffID != "" && s.hasLayer(l.diffID) {
				meta, err := s.readLayerMeta(l.diffID)
				if err != nil {
					return fail(err)
				}
				if l.digest == "" || slices.Contains(meta.BlobDigests, l.digest) {
					res.Reused++
					byKey[key] = j
					s.event(opts, ProgressEvent{Layer: l.diffID, State: LayerReused})
					continue
				}
				j.verify = true
			}
			byKey[key] = j
			jobs = append(jobs, j)
		}
	}
	if err := s.runJobs(ctx, st, jobs, opts, log); err != nil {
		return fail(err)
	}

	// Legacy v1 images get their config now that their diffIDs are known.
	for _, img := range src.images {
		if img.configJSON != nil {
			continue
		}
		var diffIDs []string
		for _, l := range img.layers {
			diffIDs = append(diffIDs, byKey["path:"+l.name].res.diffID)
		}
		cfg, err := legacyConfig(img.legacy, diffIDs)
		if err != nil {
			return fail(err)
		}
		img.configJSON, img.id = cfg, sha256Hex(cfg)
	}

	// Make the extracted data durable before it becomes visible.
	if fd, err := unix.Open(st.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		if durable {
			_ = unix.Syncfs(fd)
		}
		unix.Close(fd)
	}
	if err := s.commit(st, src, byKey, jobs, extraTag, res, log); err != nil {
		return fail(err)
	}
	repos, err := s.loadRepos()
	if err != nil {
		return fail(err)
	}
	for _, img := range src.images {
		im, err := s.loadImage(img.id, repos)
		if err != nil {
			return fail(err)
		}
		res.Images = append(res.Images, im)
	}
	return res, nil
}

func (s *Store) event(opts ImportOptions, ev ProgressEvent) {
	if opts.Progress != nil {
		opts.Progress(ev)
	}
}

// runJobs extracts the layers, opts.Parallel at a time; the first error
// cancels the rest.
func (s *Store) runJobs(ctx context.Context, st *staging, jobs []*layerJob, opts ImportOptions, log logrus.FieldLogger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, opts.Parallel)
	root0 := Privileged()
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			label := j.src.digest
			if label == "" {
				label = j.src.diffID
			}
			if label == "" {
				label = j.src.name
			}
			_, total, _ := j.src.open()
			s.event(opts, ProgressEvent{Layer: label, State: LayerStarted, Total: total})
			dest := filepath.Join(st.dir, fmt.Sprintf("layer-%d", i))
			err := os.Mkdir(dest, 0o700)
			eo := extractOptions{maxRatio: opts.MaxRatio, floor: opts.RatioFloor, root0: root0,
				warn:     func(f string, a ...any) { log.Warnf(f, a...) },
				progress: func(n int64) { s.event(opts, ProgressEvent{Layer: label, State: LayerProgress, Total: total, Done: n}) }}
			if opts.MaxRatio < 0 {
				eo.maxRatio = 0
			}
			start := time.Now()
			if err == nil {
				if j.verify {
					j.res, err = verifyLayer(ctx, j.src, eo)
				} else {
					j.res, err = extractLayer(ctx, j.src, dest, eo)
				}
			}
			if err != nil {
				if errors.Is(err, context.Canceled) && ctx.Err() != nil {
					return
				}
				s.event(opts, ProgressEvent{Layer: label, State: LayerFailed, Err: err})
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
				return
			}
			state := LayerDone
			if j.verify {
				state = LayerVerified
			}
			s.event(opts, ProgressEvent{Layer: label, State: state, Total: total, Done: total})
			log.WithFields(logrus.Fields{"layer": j.res.diffID, "bytes": j.res.size, "compression": j.res.compression,
				"seconds": fmt.Sprintf("%.2f", time.Since(start).Seconds())}).Debug("layer done")
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// verifyLayer hashes a blob (and its uncompressed tar) without extracting.
func verifyLayer(ctx context.Context, src *layerSource, o extractOptions) (*layerResult, error) {
	return streamLayer(ctx, src, "", o)
}

// commit moves layers and images into place and updates the tags, under
// the writer lock.
func (s *Store) commit(st *staging, src *source, byKey map[string]*layerJob, jobs []*layerJob, extraTag *parsedRef, res *ImportResult, log logrus.FieldLogger) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	// Layers planned as already stored must still be there: a gc may
	// have run between planning and now.
	for _, j := range byKey {
		if j.res == nil && !s.hasLayer(j.src.diffID) {
			return fmt.Errorf("layer %s was removed by a concurrent gc; import again", j.src.diffID)
		}
	}
	layersDir := filepath.Join(s.root, "layers", "sha256")
	for _, j := range jobs {
		r := j.res
		if s.hasLayer(r.diffID) {
			if err := s.addBlobDigest(r); err != nil {
				return err
			}
			if !j.verify {
				res.Reused++
			}
			continue
		}
		if j.verify {
			return fmt.Errorf("layer %s vanished during import", r.diffID)
		}
		if err := os.Rename(r.dir, s.layerPath(r.diffID)); err != nil {
			return fmt.Errorf("layer %s: %w", r.diffID, err)
		}
		res.Extracted++
		res.Bytes += r.size
	}
	if err := syncDir(layersDir); err != nil {
		return err
	}
	repos, err := s.loadRepos()
	if err != nil {
		return err
	}
	for _, img := range src.images {
		meta := imageMeta{ID: img.id, Source: src.format, Imported: time.Now().UTC()}
		if img.manifest != "" {
			meta.Manifest = []string{img.manifest}
		}
		for _, l := range img.layers {
			key := l.diffID
			if key == "" {
				key = "path:" + l.name
			}
			j := byKey[key]
			il := imageLayer{DiffID: l.diffID, Digest: l.digest}
			if j.res != nil {
				il.DiffID = j.res.diffID
				if il.Digest == "" {
					il.Digest = j.res.blobDigest
				}
			}
			meta.Layers = append(meta.Layers, il)
		}
		if err := s.writeImage(st, img, &meta); err != nil {
			return err
		}
		refs := img.refs
		if extraTag != nil {
			refs = append(refs, *extraTag)
		}
		if img.bareTag != "" && len(refs) == 0 {
			w := fmt.Sprintf("image %s: ref name %q has no repository and stays untagged; name it with --tag NAME:%s or strata tag", ShortID(img.id), img.bareTag, img.bareTag)
			log.Warn(w)
			res.Warnings = append(res.Warnings, w)
		}
		for _, r := range refs {
			repos.set(r, img.id)
			if img.manifest != "" {
				repos.set(parsedRef{Repo: r.Repo, Digest: img.manifest}, img.id)
			}
		}
	}
	if err := syncDir(filepath.Join(s.root, "images")); err != nil {
		return err
	}
	return s.saveRepos(repos)
}

// writeImage makes images/<id>/ appear atomically (or adds manifest
// digests to an existing one).
func (s *Store) writeImage(st *staging, img *imageSource, meta *imageMeta) error {
	dst := s.imagePath(img.id)
	if old, err := s.readImageMeta(img.id); err == nil {
		changed := false
		for _, m := range meta.Manifest {
			if !slices.Contains(old.Manifest, m) {
				old.Manifest = append(old.Manifest, m)
				changed = true
			}
		}
		for i := range old.Layers {
			if old.Layers[i].Digest == "" && i < len(meta.Layers) && meta.Layers[i].Digest != "" {
				old.Layers[i].Digest = meta.Layers[i].Digest
				changed = true
			}
		}
		if !changed {
			return nil
		}
		b, _ := json.MarshalIndent(old, "", "  ")
		return writeFileAtomic(filepath.Join(dst, "image.json"), append(b, '\n'), 0o600)
	}
	tmp := filepath.Join(st.dir, "image-"+img.id)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(tmp, "config.json"), img.configJSON); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := writeSynced(filepath.Join(tmp, "image.json"), append(b, '\n')); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("image %s: %w", img.id, err)
	}
	return nil
}

func writeSynced(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := fsync(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// addBlobDigest records a newly verified blob digest for a stored layer.
func (s *Store) addBlobDigest(r *layerResult) error {
	if r.blobDigest == "" {
		return nil
	}
	m, err := s.readLayerMeta(r.diffID)
	if err != nil {
		return err
	}
	if slices.Contains(m.BlobDigests, r.blobDigest) {
		return nil
	}
	m.BlobDigests = append(m.BlobDigests, r.blobDigest)
	if !slices.Contains(m.Compressions, r.compression) {
		m.Compressions = append(m.Compressions, r.compression)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return writeFileAtomic(filepath.Join(s.layerPath(r.diffID), "layer.json"), append(b, '\n'), 0o600)
}
