package layerstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// PullOptions tune Pull. The zero value is usable.
type PullOptions struct {
	Registry RegistryOptions
	// Platform chooses from a manifest list: "os/arch[/variant]"; "" is
	// the host's (HostPlatform).
	Platform string
	// Jobs is how many layers download at once (default 4).
	Jobs int
	// MaxRatio and RatioFloor are ImportOptions'.
	MaxRatio   int64
	RatioFloor int64
	// Progress, when set, receives per-layer events (from several
	// goroutines): Total and Done count compressed bytes.
	Progress func(ProgressEvent)
	Log      logrus.FieldLogger
}

// PullResult says what Pull did.
type PullResult struct {
	Ref        string // the full reference pulled (registry/repo:tag or @digest)
	Digest     string // digest of what the reference names (a manifest list or a manifest)
	Manifest   string // digest of the image manifest
	Platform   string // the platform chosen from a manifest list; "" without one
	Image      *Image
	Downloaded int   // layers downloaded and extracted
	Reused     int   // layers already in the store
	Bytes      int64 // compressed bytes downloaded
	Extracted  int64 // uncompressed bytes extracted
}

// HostPlatform is the platform Pull chooses by default.
func HostPlatform() v1.Platform {
	p := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if p.Architecture == "arm64" {
		p.Variant = "v8"
	}
	return p
}

const (
	defaultPullJobs = 4
	maxManifestSize = 4 << 20
	maxConfigSize   = 8 << 20
	maxListDepth    = 4
)

// Pull fetches an image from a registry into the store: the manifest (a
// manifest list is resolved to o.Platform), the config, and every layer the
// store does not have yet, o.Jobs at a time. Each layer blob is streamed from
// the connection through the same single pass as an import (decompression
// detected from its first bytes, blob digest and diffID verified,
// extraction into staging) — no copy of the blob touches the disk. Each
// layer is moved into the store as soon as it is verified, so a pull that
// is interrupted (network, kill -9) keeps the layers it finished and the
// next pull resumes from there; the image and its tags (registry/repo:tag
// and registry/repo@digest) appear only when every layer is in. Such
// orphan layers are removed by gc like any unused layer.
func (s *Store) Pull(ctx context.Context, ref string, o PullOptions) (*PullResult, error) {
	fail := func(err error) (*PullResult, error) { return nil, fmt.Errorf("pull %s: %w", ref, err) }
	log := o.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	if o.Jobs <= 0 {
		o.Jobs = defaultPullJobs
	}
	if o.MaxRatio == 0 {
		o.MaxRatio = defaultMaxRatio
	}
	if o.RatioFloor == 0 {
		o.RatioFloor = defaultRatioFloor
	}
	want := HostPlatform()
	if o.Platform != "" {
		p, err := v1.ParsePlatform(o.Platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return fail(fmt.Errorf("--platform %q is not os/arch[/variant]: %w", o.Platform, ErrInvalidReference))
		}
		want = *p
	}
	rref, err := o.Registry.parseRemoteRef(ref)
	if err != nil {
		return fail(err)
	}
	pr, err := parseRef(ref)
	if err != nil {
		return fail(err)
	}
	// A digest names content: when the store has it, there is nothing to fetch.
	if pr.Digest != "" {
		repos, err := s.loadRepos()
		if err != nil {
			return fail(err)
		}
		if id, ok := repos.get(pr); ok {
			if img, err := s.loadImage(id, repos); err == nil {
				for _, l := range img.Layers {
					s.pullEvent(o, ProgressEvent{Layer: l.Digest, State: LayerReused, Total: l.Size})
				}
				return &PullResult{Ref: pr.String(), Digest: pr.Digest, Manifest: pr.Digest, Image: img, Reused: len(img.Layers)}, nil
			}
		}
	}
	repo := rref.Context()
	reg := repo.RegistryStr()
	puller, err := remote.NewPuller(o.Registry.remoteOptions(ctx, reg, o.Jobs)...)
	if err != nil {
		return fail(err)
	}
	res := &PullResult{Ref: pr.String()}

	// 1. The manifest, through a manifest list when there is one.
	desc, err := puller.Get(ctx, rref)
	if err != nil {
		return fail(o.Registry.registryErr("manifest", repo, err))
	}
	res.Digest = desc.Digest.String()
	desc, platform, err := resolvePlatform(ctx, puller, o.Registry, repo, desc, want, 0)
	if err != nil {
		return fail(err)
	}
	res.Manifest, res.Platform = desc.Digest.String(), platform
	if len(desc.Manifest) > maxManifestSize {
		return fail(invalid("manifest of %d bytes", len(desc.Manifest)))
	}
	man, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return fail(invalid("manifest %s: %v", desc.Digest, err))
	}
	switch man.Config.MediaType {
	case types.OCIConfigJSON, types.DockerConfigJSON, "":
	default:
		return fail(invalid("%s is not a container image (config media type %s)", desc.Digest, man.Config.MediaType))
	}

	// 2. The config: its digest is the image ID.
	cfg, err := fetchSmallBlob(ctx, puller, o.Registry, repo, man.Config, maxConfigSize)
	if err != nil {
		return fail(fmt.Errorf("config: %w", err))
	}
	diffIDs, err := configDiffIDs(cfg)
	if err != nil {
		return fail(err)
	}
	if len(diffIDs) != len(man.Layers) {
		return fail(invalid("manifest %s has %d layers, its config %d diff_ids", desc.Digest, len(man.Layers), len(diffIDs)))
	}
	blobs := &remoteBlobs{ctx: ctx, puller: puller, repo: repo, reg: o.Registry, sizes: map[string]int64{}}
	img := &imageSource{desc: ref, configJSON: cfg, id: sha256Hex(cfg), refs: []parsedRef{pr}, manifest: res.Digest}
	for i, l := range man.Layers {
		if l.Digest.Algorithm != "sha256" || len(l.Digest.Hex) != 64 || !hexRe().MatchString(l.Digest.Hex) {
			return fail(invalid("layer %d: digest %q is not sha256", i+1, l.Digest))
		}
		if l.Size < 0 {
			return fail(invalid("layer %s: negative size", l.Digest))
		}
		blobs.sizes[l.Digest.String()] = l.Size
		img.layers = append(img.layers, &layerSource{name: l.Digest.String(), diffID: diffIDs[i], digest: l.Digest.String(), size: l.Size, set: blobs})
	}
	mediaTypes := map[string]string{}
	for _, l := range man.Layers {
		mediaTypes[l.Digest.String()] = string(l.MediaType)
	}

	// 3. The layers the store lacks, each moved in once verified.
	st, err := s.newStaging("pull")
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	byKey := map[string]*layerJob{}
	var jobs []*layerJob
	for _, l := range img.layers {
		if byKey[l.diffID] != nil {
			continue
		}
		j := &layerJob{key: l.diffID, src: l}
		byKey[l.diffID] = j
		if s.hasLayer(l.diffID) {
			res.Reused++
			s.pullEvent(o, ProgressEvent{Layer: l.digest, State: LayerReused, Total: l.size})
			continue
		}
		jobs = append(jobs, j)
	}
	fromRepo := repoKey(reg, repo.RepositoryStr())
	done, err := s.pullLayers(ctx, st, jobs, o, log, func(r *layerResult) *distributionMeta {
		return &distributionMeta{Blobs: []blobRecord{{Digest: r.blobDigest, Size: r.blobSize, MediaType: mediaTypes[r.src.digest],
			Compression: r.compression, Repositories: []string{fromRepo}}}}
	})
	for _, r := range done {
		res.Downloaded++
		res.Bytes += r.blobSize
		res.Extracted += r.size
	}
	if err != nil {
		return fail(err)
	}

	// 4. The image and its tags (commit checks that every layer is still there).
	for _, j := range byKey {
		j.res = nil
	}
	ires := &ImportResult{}
	src := &source{format: "registry", images: []*imageSource{img}}
	if err := s.commit(st, src, byKey, nil, nil, ires, log); err != nil {
		return fail(err)
	}
	// Reused layers: the registry holds their blob too, if the store has
	// verified that blob for the layer (the manifest's word alone is not
	// recorded).
	for _, l := range img.layers {
		if slices.ContainsFunc(done, func(r *layerResult) bool { return r.diffID == l.diffID }) {
			continue
		}
		d := l.digest
		mt := mediaTypes[d]
		if err := s.updateDistribution(l.diffID, func(m *distributionMeta) bool {
			known := slices.ContainsFunc(m.Blobs, func(b blobRecord) bool { return b.Digest == d })
			if lm, err := s.readLayerMeta(l.diffID); err == nil && slices.Contains(lm.BlobDigests, d) {
				known = true
			}
			if !known {
				return false
			}
			return m.merge(blobRecord{Digest: d, Size: l.size, MediaType: mt, Repositories: []string{fromRepo}})
		}); err != nil {
			log.Warnf("layer %s: recording its source: %v", l.diffID, err)
		}
	}
	repos, err := s.loadRepos()
	if err != nil {
		return fail(err)
	}
	if res.Image, err = s.loadImage(img.id, repos); err != nil {
		return fail(err)
	}
	return res, nil
}

func (s *Store) pullEvent(o PullOptions, ev ProgressEvent) {
	if o.Progress != nil {
		o.Progress(ev)
	}
}

// pullLayers streams and extracts the layers, o.Jobs at a time, and moves
// each into the store as soon as it is verified. The first error cancels
// the rest; the layers finished until then stay (and are returned).
func (s *Store) pullLayers(ctx context.Context, st *staging, jobs []*layerJob, o PullOptions, log logrus.FieldLogger,
	dist func(*layerResult) *distributionMeta) ([]*layerResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		done     []*layerResult
	)
	// Workers take the layers bottom first, so that an interrupted pull
	// has kept the layers it started with.
	type item struct {
		i int
		j *layerJob
	}
	queue := make(chan item, len(jobs))
	for i, j := range jobs {
		queue <- item{i, j}
	}
	close(queue)
	root0 := Privileged()
	work := func(i int, j *layerJob) {
		label, total := j.src.digest, j.src.size
		s.pullEvent(o, ProgressEvent{Layer: label, State: LayerStarted, Total: total})
		start := time.Now()
		dest := filepath.Join(st.dir, fmt.Sprintf("layer-%d", i))
		eo := extractOptions{maxRatio: max(o.MaxRatio, 0), floor: o.RatioFloor, root0: root0,
			warn: func(f string, a ...any) { log.Warnf(f, a...) },
			progress: func(n int64) {
				s.pullEvent(o, ProgressEvent{Layer: label, State: LayerProgress, Total: total, Done: n})
			}}
		err := os.Mkdir(dest, 0o700)
		var r *layerResult
		if err == nil {
			r, err = extractLayer(ctx, j.src, dest, eo)
		}
		if err == nil {
			err = writeDistribution(dest, dist(r))
		}
		if err == nil {
			err = s.commitLayer(r)
		}
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				return
			}
			s.pullEvent(o, ProgressEvent{Layer: label, State: LayerFailed, Err: err})
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			cancel()
			return
		}
		mu.Lock()
		done = append(done, r)
		mu.Unlock()
		s.pullEvent(o, ProgressEvent{Layer: label, State: LayerDone, Total: total, Done: total})
		log.WithFields(logrus.Fields{"layer": r.diffID, "blob": r.blobDigest, "bytes": r.size, "compression": r.compression,
			"seconds": fmt.Sprintf("%.2f", time.Since(start).Seconds())}).Debug("layer pulled")
	}
	for range min(o.Jobs, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range queue {
				if ctx.Err() != nil {
					return
				}
				work(it.i, it.j)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return done, firstErr
	}
	return done, ctx.Err()
}

// commitLayer makes one extracted and verified layer durable and moves it
// into layers/ under the store lock (or, when another import or pull put
// the same layer there meanwhile, adds what this one verified to it).
func (s *Store) commitLayer(r *layerResult) error {
	if durable {
		if fd, err := unix.Open(r.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			_ = unix.Syncfs(fd)
			unix.Close(fd)
		}
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if s.hasLayer(r.diffID) {
		if err := s.addBlobDigest(r); err != nil {
			return err
		}
		m, err := readDistributionFile(filepath.Join(r.dir, distributionFile))
		if err != nil {
			return err
		}
		stored, err := s.readDistribution(r.diffID)
		if err != nil {
			return err
		}
		changed := false
		for _, b := range m.Blobs {
			changed = stored.merge(b) || changed
		}
		if changed {
			return writeDistribution(s.layerPath(r.diffID), stored)
		}
		return nil
	}
	if err := os.Rename(r.dir, s.layerPath(r.diffID)); err != nil {
		return fmt.Errorf("layer %s: %w", r.diffID, err)
	}
	return syncDir(filepath.Join(s.root, "layers", "sha256"))
}

// resolvePlatform follows a manifest list (image index) to the image for
// want; an image manifest is returned as it is.
func resolvePlatform(ctx context.Context, puller *remote.Puller, ro RegistryOptions, repo name.Repository, desc *remote.Descriptor, want v1.Platform, depth int) (*remote.Descriptor, string, error) {
	switch desc.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		return desc, "", nil
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return nil, "", invalid("%s is a docker schema 1 manifest, which strata does not read (push it again with a current docker or skopeo)", desc.Digest)
	case types.OCIImageIndex, types.DockerManifestList:
	default:
		return nil, "", invalid("%s has media type %q, not an image manifest or manifest list", desc.Digest, desc.MediaType)
	}
	if depth >= maxListDepth {
		return nil, "", invalid("manifest lists nested more than %d deep", maxListDepth)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, "", invalid("manifest list %s: %v", desc.Digest, err)
	}
	child, ok := choosePlatform(idx.Manifests, want)
	if !ok {
		var have []string
		for _, m := range idx.Manifests {
			if m.Platform != nil && m.Platform.OS != "unknown" {
				have = append(have, platformString(*m.Platform))
			}
		}
		list := "none is labelled with a platform"
		if len(have) > 0 {
			list = "it has " + strings.Join(have, ", ")
		}
		return nil, "", fmt.Errorf("%w %s in the manifest list %s (%s); choose one with --platform", ErrNoPlatform, platformString(want), desc.Digest, list)
	}
	cd, err := puller.Get(ctx, repo.Digest(child.Digest.String()))
	if err != nil {
		return nil, "", ro.registryErr("manifest "+child.Digest.String(), repo, err)
	}
	if cd.Digest != child.Digest {
		return nil, "", fmt.Errorf("manifest %s: %w: the registry sent %s", child.Digest, ErrDigestMismatch, cd.Digest)
	}
	got, p, err := resolvePlatform(ctx, puller, ro, repo, cd, want, depth+1)
	if p == "" {
		p = platformString(*child.Platform)
	}
	return got, p, err
}

// choosePlatform picks the first entry for want. An entry without a
// platform never matches; an empty variant in want matches any variant,
// and arm64's variant defaults to v8 on both sides.
func choosePlatform(ms []v1.Descriptor, want v1.Platform) (v1.Descriptor, bool) {
	norm := func(p v1.Platform) v1.Platform {
		if p.Architecture == "arm64" && p.Variant == "" {
			p.Variant = "v8"
		}
		return p
	}
	w := norm(want)
	for _, m := range ms {
		if m.Platform == nil {
			continue
		}
		p := norm(*m.Platform)
		if p.OS != w.OS || p.Architecture != w.Architecture {
			continue
		}
		if want.Variant != "" && p.Variant != w.Variant {
			continue
		}
		if want.OSVersion != "" && p.OSVersion != want.OSVersion {
			continue
		}
		return m, true
	}
	return v1.Descriptor{}, false
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// fetchSmallBlob reads a blob that must fit in memory (a config) and
// checks its digest.
func fetchSmallBlob(ctx context.Context, puller *remote.Puller, ro RegistryOptions, repo name.Repository, d v1.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, invalid("blob %s: %d bytes is too large", d.Digest, d.Size)
	}
	l, err := puller.Layer(ctx, repo.Digest(d.Digest.String()))
	if err != nil {
		return nil, ro.registryErr("blob "+d.Digest.String(), repo, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, ro.registryErr("blob "+d.Digest.String(), repo, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(&blobReader{r: rc, reg: repo.RegistryStr()}, limit+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != d.Digest.String() {
		return nil, fmt.Errorf("blob %s: %w: the registry sent %s (%d bytes)", d.Digest, ErrDigestMismatch, got, len(b))
	}
	return b, nil
}

// remoteBlobs is the fileSet of a pull: each name is a blob digest, opened
// as a GET of the blob from the registry, streamed.
type remoteBlobs struct {
	ctx    context.Context
	puller *remote.Puller
	repo   name.Repository
	reg    RegistryOptions
	sizes  map[string]int64
}

func (b *remoteBlobs) open(d string) (io.ReadCloser, int64, error) {
	l, err := b.puller.Layer(b.ctx, b.repo.Digest(d))
	if err != nil {
		return nil, 0, b.reg.registryErr("blob "+d, b.repo, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, 0, b.reg.registryErr("blob "+d, b.repo, err)
	}
	return &blobReader{r: rc, reg: b.repo.RegistryStr()}, b.sizes[d], nil
}

func (b *remoteBlobs) exists(d string) bool { _, ok := b.sizes[d]; return ok }
func (b *remoteBlobs) topNames() []string   { return nil }
func (b *remoteBlobs) Close() error         { return nil }

// blobReader is a blob's body. go-containerregistry's reader checks the
// digest itself and fails the last read with its own message; the store
// hashes every blob and reports a difference as ErrDigestMismatch naming
// both digests, so that failure becomes a plain end of stream here. A
// connection that breaks becomes a downloadError.
type blobReader struct {
	r   io.ReadCloser
	reg string
}

func (b *blobReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	switch {
	case err == nil, err == io.EOF:
	case strings.HasPrefix(err.Error(), "error verifying "):
		err = io.EOF
	case errors.Is(err, context.Canceled):
	default:
		err = &downloadError{reg: b.reg, err: err}
	}
	return n, err
}

func (b *blobReader) Close() error { return b.r.Close() }

// downloadError: the connection broke in the middle of a blob. It counts as
// a truncated stream (so the decompressors and the tar reader pass it on as
// it is) and as a registry error.
type downloadError struct {
	reg string
	err error
}

func (e *downloadError) Error() string {
	return fmt.Sprintf("connection to %s lost during the download (%v)", e.reg, e.err)
}

func (e *downloadError) Unwrap() error { return e.err }

func (e *downloadError) Is(target error) bool {
	return target == ErrRegistry || target == ErrTruncated || target == io.ErrUnexpectedEOF
}
