package layerstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// Push formats and compressions.
const (
	PushOCI    = "oci"    // OCI image manifest (default)
	PushDocker = "docker" // docker image manifest v2 schema 2

	CompressGzip = "gzip" // default
	CompressZstd = "zstd"
	CompressNone = "none"
)

// PushOptions tune Push. The zero value is usable.
type PushOptions struct {
	Registry RegistryOptions
	// Compression is how strata compresses a layer the registry does not
	// have yet: gzip (default), zstd or none. A blob the registry already
	// has, or can mount from another repository, is used as it is.
	Compression string
	// ForceCompression uses only blobs of that compression, even when the
	// registry has the layer in another one.
	ForceCompression bool
	// Format is the manifest's: PushOCI (default) or PushDocker.
	Format string
	// Jobs is how many layers upload at once (default 4).
	Jobs int
	// Progress, when set, receives per-layer events: LayerStarted,
	// LayerProgress (Done counts uncompressed bytes of Total), LayerDone
	// (uploaded), LayerReused (the registry had it, or mounted it),
	// LayerFailed.
	Progress func(ProgressEvent)
	Log      logrus.FieldLogger
}

// PushResult says what Push did.
type PushResult struct {
	Ref      string // the full destination reference
	Digest   string // the manifest's digest
	Uploaded int    // layers uploaded
	Existing int    // layers the destination repository had
	Mounted  int    // layers mounted from another repository of the registry
	Bytes    int64  // compressed bytes uploaded
}

// Push uploads img to dest (registry/repo[:tag]). The config goes as it
// is, byte for byte, so the image ID stays the same. Layers: the store
// keeps them extracted, and can give back the exact uncompressed tar
// (tar-split) but not the compressed blob an image came with. So for each
// layer Push first looks for a blob known to carry it (distribution.go):
// one the destination repository has already is referred to, one in
// another repository of the same registry is mounted from there; only
// when neither works does it compress the tar (o.Compression) and upload
// it, streaming, with no copy on disk. Those blobs are deterministic, and
// their digests are remembered, so the next push of the layer skips it.
// The manifest is new (its layer digests may differ from the image's
// original manifest); it is recorded as dest@digest in the store.
func (s *Store) Push(ctx context.Context, img *Image, dest string, o PushOptions) (*PushResult, error) {
	fail := func(err error) (*PushResult, error) { return nil, fmt.Errorf("push %s: %w", dest, err) }
	log := o.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	if o.Jobs <= 0 {
		o.Jobs = defaultPullJobs
	}
	switch o.Compression {
	case "":
		o.Compression = CompressGzip
	case CompressGzip, CompressZstd, CompressNone:
	default:
		return fail(fmt.Errorf("compression %q is not gzip, zstd or none", o.Compression))
	}
	switch o.Format {
	case "":
		o.Format = PushOCI
	case PushOCI, PushDocker:
	default:
		return fail(fmt.Errorf("format %q is not oci or docker", o.Format))
	}
	if o.Format == PushDocker && o.Compression == CompressZstd {
		return fail(errors.New("docker manifests have no zstd layers: use --format oci"))
	}
	rref, err := o.Registry.parseRemoteRef(dest)
	if err != nil {
		return fail(err)
	}
	if _, ok := rref.(name.Digest); ok {
		return fail(fmt.Errorf("push to a tag, not a digest: %w", ErrInvalidReference))
	}
	pr, err := parseTagRef(dest)
	if err != nil {
		return fail(err)
	}
	repo := rref.Context()
	reg := repo.RegistryStr()
	ropts := o.Registry.remoteOptions(ctx, reg, o.Jobs)
	pusher, err := remote.NewPusher(ropts...)
	if err != nil {
		return fail(err)
	}
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return fail(err)
	}
	p := &pusher1{s: s, o: o, log: log, repo: repo, pusher: pusher, puller: puller, res: &PushResult{Ref: pr.String()}}

	// Layers, o.Jobs at a time; the first error stops the rest.
	descs := make([]v1.Descriptor, len(img.Layers))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Jobs)
	for i, l := range img.Layers {
		g.Go(func() error {
			d, err := p.layer(gctx, l)
			if err != nil {
				p.event(ProgressEvent{Layer: l.DiffID, State: LayerFailed, Err: err})
				return fmt.Errorf("layer %s: %w", l.DiffID, err)
			}
			descs[i] = d
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}

	// The config, then the manifest.
	cfgType, manType := types.OCIConfigJSON, types.OCIManifestSchema1
	if o.Format == PushDocker {
		cfgType, manType = types.DockerConfigJSON, types.DockerManifestSchema2
	}
	if err := pusher.Upload(ctx, repo, static.NewLayer(img.ConfigJSON, cfgType)); err != nil {
		return fail(o.Registry.registryErr("config", repo, err))
	}
	man := v1.Manifest{SchemaVersion: 2, MediaType: manType,
		Config: v1.Descriptor{MediaType: cfgType, Size: int64(len(img.ConfigJSON)), Digest: v1.Hash{Algorithm: "sha256", Hex: img.ID}}}
	for i, d := range descs {
		if d.MediaType, err = layerMediaType(o.Format, d.MediaType); err != nil {
			return fail(fmt.Errorf("layer %s: %w", img.Layers[i].DiffID, err))
		}
		man.Layers = append(man.Layers, d)
	}
	mb, err := marshalNoEscape(man)
	if err != nil {
		return fail(err)
	}
	if err := pusher.Put(ctx, rref, rawManifest{b: mb, mt: manType}); err != nil {
		return fail(o.Registry.registryErr("manifest", repo, err))
	}
	p.res.Digest = "sha256:" + sha256Hex(mb)

	// The store remembers where the image went: dest@digest, as docker does.
	if err := s.addRepoDigest(parsedRef{Repo: pr.Repo, Digest: p.res.Digest}, img.ID); err != nil {
		log.Warnf("recording %s@%s: %v", pr.Repo, p.res.Digest, err)
	}
	return p.res, nil
}

// addRepoDigest points repo@digest at image id.
func (s *Store) addRepoDigest(r parsedRef, id string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	repos, err := s.loadRepos()
	if err != nil {
		return err
	}
	if got, ok := repos.get(r); ok && got == id {
		return nil
	}
	repos.set(r, id)
	return s.saveRepos(repos)
}

// layerMediaType is the media type of a layer blob in a manifest of format f,
// from the compression the blob's bytes have ("gzip", "zstd", "none").
func layerMediaType(f string, comp types.MediaType) (types.MediaType, error) {
	switch {
	case f == PushOCI && comp == CompressGzip:
		return types.OCILayer, nil
	case f == PushOCI && comp == CompressZstd:
		return types.OCILayerZStd, nil
	case f == PushOCI && comp == CompressNone:
		return types.OCIUncompressedLayer, nil
	case f == PushDocker && comp == CompressGzip:
		return types.DockerLayer, nil
	case f == PushDocker && comp == CompressNone:
		return types.DockerUncompressedLayer, nil
	case f == PushDocker && comp == CompressZstd:
		return "", errors.New("the registry's blob for it is zstd-compressed, which docker manifests cannot name: use --format oci")
	}
	return "", fmt.Errorf("unknown layer compression %q", comp)
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// pusher1 is one Push.
type pusher1 struct {
	s      *Store
	o      PushOptions
	log    logrus.FieldLogger
	repo   name.Repository
	pusher *remote.Pusher
	puller *remote.Puller
	mu     sync.Mutex
	res    *PushResult
}

func (p *pusher1) event(ev ProgressEvent) {
	if p.o.Progress != nil {
		p.o.Progress(ev)
	}
}

func (p *pusher1) count(f func(r *PushResult)) {
	p.mu.Lock()
	f(p.res)
	p.mu.Unlock()
}

// generatorFor names the generator of compression c.
func generatorFor(c string) string {
	switch c {
	case CompressGzip:
		return genGzip
	case CompressZstd:
		return genZstd
	}
	return ""
}

// layer gets one layer into the registry and returns its descriptor; the
// descriptor's MediaType holds the blob's compression (Push maps it).
func (p *pusher1) layer(ctx context.Context, l LayerInfo) (v1.Descriptor, error) {
	reg := p.repo.RegistryStr()
	here := repoKey(reg, p.repo.RepositoryStr())
	cands, err := p.s.blobCandidates(l.DiffID)
	if err != nil {
		return v1.Descriptor{}, err
	}
	// The uncompressed tar is a blob strata can always make; its digest is
	// the diffID.
	tarBlob := blobRecord{Digest: l.DiffID, Size: l.Size, Compression: CompressNone, Generator: "tar"}
	if !slices.ContainsFunc(cands, func(b blobRecord) bool { return b.Digest == l.DiffID }) {
		cands = append(cands, tarBlob)
	}
	desc := func(b blobRecord) v1.Descriptor {
		h, _ := v1.NewHash(b.Digest)
		return v1.Descriptor{MediaType: types.MediaType(b.Compression), Size: b.Size, Digest: h}
	}
	record := func(b blobRecord) {
		b.Repositories = []string{here}
		if err := p.s.updateDistribution(l.DiffID, func(m *distributionMeta) bool { return m.merge(b) }); err != nil {
			p.log.Warnf("layer %s: recording blob %s: %v", l.DiffID, b.Digest, err)
		}
	}

	// 1. A blob the repository has already.
	for _, c := range cands {
		if c.Generator == "tar" && p.o.Compression != CompressNone {
			continue // an uncompressed blob only when asked for
		}
		ok, err := p.exists(ctx, c.Digest)
		if err != nil {
			return v1.Descriptor{}, err
		}
		if !ok {
			continue
		}
		if c.Size < 0 || c.Compression == "" {
			if c, err = p.describe(ctx, c); err != nil {
				return v1.Descriptor{}, err
			}
		}
		if p.o.ForceCompression && c.Compression != p.o.Compression {
			continue
		}
		p.log.WithFields(logrus.Fields{"layer": l.DiffID, "blob": c.Digest}).Info("blob already in the repository")
		p.event(ProgressEvent{Layer: l.DiffID, State: LayerReused, Total: l.Size})
		p.count(func(r *PushResult) { r.Existing++ })
		record(c)
		return desc(c), nil
	}
	// 2. A blob another repository of the registry has: mount it.
	for _, c := range cands {
		if p.o.ForceCompression && c.Compression != p.o.Compression {
			continue
		}
		for _, from := range c.Repositories {
			fromRepo, ok := sameRegistryRepo(from, p.repo)
			if !ok {
				continue
			}
			ml := &remote.MountableLayer{Layer: &knownBlob{rec: c, diffID: l.DiffID}, Reference: fromRepo.Digest(c.Digest)}
			err := p.pusher.Upload(ctx, p.repo, ml)
			if errors.Is(err, errNotReproducible) {
				continue // the registry would not mount it (gone, or no access)
			}
			if err != nil {
				return v1.Descriptor{}, p.o.Registry.registryErr("blob "+c.Digest, p.repo, err)
			}
			if c.Size < 0 || c.Compression == "" {
				if c, err = p.describe(ctx, c); err != nil {
					return v1.Descriptor{}, err
				}
			}
			p.log.WithFields(logrus.Fields{"layer": l.DiffID, "blob": c.Digest, "from": from}).Info("blob mounted from another repository")
			p.event(ProgressEvent{Layer: l.DiffID, State: LayerReused, Total: l.Size})
			p.count(func(r *PushResult) { r.Mounted++ })
			record(c)
			return desc(c), nil
		}
	}
	// 3. Make the blob: compress the layer's exact tar.
	if err := p.s.checkTarSplit(l.DiffID); err != nil {
		return v1.Descriptor{}, err
	}
	gen := generatorFor(p.o.Compression)
	var known *blobRecord
	if p.o.Compression == CompressNone {
		known = &tarBlob
	} else if i := slices.IndexFunc(cands, func(b blobRecord) bool { return b.Generator == gen && b.Size >= 0 }); i >= 0 {
		known = &cands[i]
	}
	p.event(ProgressEvent{Layer: l.DiffID, State: LayerStarted, Total: l.Size})
	gl := &genLayer{s: p.s, diffID: l.DiffID, size: l.Size, comp: p.o.Compression, known: known,
		progress: func(n int64) {
			p.event(ProgressEvent{Layer: l.DiffID, State: LayerProgress, Total: l.Size, Done: n})
		}}
	err = p.upload(ctx, gl)
	if err != nil && known != nil && known.Generator != "tar" && ctx.Err() == nil &&
		!errors.Is(err, ErrDigestMismatch) && !errors.Is(err, ErrNoTarSplit) {
		// The noted digest may be stale: the compressor can make other bytes
		// than when it was noted (a new library version). Forget it and
		// stream a new blob, whose digest is computed on the way.
		p.log.Warnf("layer %s: uploading the blob noted as %s failed (%v); compressing it anew", l.DiffID, known.Digest, err)
		d := known.Digest
		_ = p.s.updateDistribution(l.DiffID, func(m *distributionMeta) bool { return m.drop(d) })
		gl = &genLayer{s: p.s, diffID: l.DiffID, size: l.Size, comp: p.o.Compression, progress: gl.progress}
		err = p.upload(ctx, gl)
	}
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, err := gl.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, _ := gl.Size()
	b := blobRecord{Digest: h.String(), Size: size, MediaType: "", Compression: p.o.Compression, Generator: gen}
	if p.o.Compression == CompressNone {
		b.Generator = ""
	}
	p.event(ProgressEvent{Layer: l.DiffID, State: LayerDone, Total: l.Size, Done: l.Size})
	p.count(func(r *PushResult) { r.Uploaded++; r.Bytes += size })
	record(b)
	return desc(b), nil
}

// upload sends a blob strata makes; a failure of the making (the tar
// cannot be made, or is not the layer) is returned as it is, not as the
// registry's.
func (p *pusher1) upload(ctx context.Context, gl *genLayer) error {
	err := p.pusher.Upload(ctx, p.repo, gl)
	if err == nil {
		return nil
	}
	if f := gl.failed(); f != nil {
		return f
	}
	return p.o.Registry.registryErr("uploading blob", p.repo, err)
}

// exists asks the repository whether it has blob d (HEAD).
func (p *pusher1) exists(ctx context.Context, d string) (bool, error) {
	l, err := p.puller.Layer(ctx, p.repo.Digest(d))
	if err != nil {
		return false, p.o.Registry.registryErr("blob "+d, p.repo, err)
	}
	ok, err := partial.Exists(l)
	if err != nil {
		return false, p.o.Registry.registryErr("blob "+d, p.repo, err)
	}
	return ok, nil
}

// describe finds the size and compression of a blob the repository has
// (a digest import verified, with nothing else known about it): its size
// from a HEAD, its compression from its first bytes.
func (p *pusher1) describe(ctx context.Context, c blobRecord) (blobRecord, error) {
	l, err := p.puller.Layer(ctx, p.repo.Digest(c.Digest))
	if err != nil {
		return c, p.o.Registry.registryErr("blob "+c.Digest, p.repo, err)
	}
	if c.Size < 0 {
		if c.Size, err = l.Size(); err != nil {
			return c, p.o.Registry.registryErr("blob "+c.Digest, p.repo, err)
		}
	}
	if c.Compression == "" {
		rc, err := l.Compressed()
		if err != nil {
			return c, p.o.Registry.registryErr("blob "+c.Digest, p.repo, err)
		}
		magic := make([]byte, 4)
		n, _ := io.ReadFull(rc, magic)
		rc.Close()
		c.Compression = detectCompression(magic[:n])
	}
	return c, nil
}

// sameRegistryRepo parses "registry/repo" and reports whether it is
// another repository of dest's registry.
func sameRegistryRepo(key string, dest name.Repository) (name.Repository, bool) {
	var opts []name.Option
	if dest.Scheme() == "http" {
		opts = append(opts, name.Insecure)
	}
	r, err := name.NewRepository(key, append(opts, name.WeakValidation)...)
	if err != nil {
		return name.Repository{}, false
	}
	if r.RegistryStr() != dest.RegistryStr() || r.RepositoryStr() == dest.RepositoryStr() {
		return name.Repository{}, false
	}
	return r, true
}

// errNotReproducible: a blob that only a registry can supply was asked for
// its bytes (a mount that the registry refused).
var errNotReproducible = errors.New("blob cannot be made from the store")

// errGeneratorChanged: compressing a layer again did not give the blob
// whose digest was noted.
var errGeneratorChanged = errors.New("compressed blob differs from the one noted")

// knownBlob is a blob the store knows by digest only.
type knownBlob struct {
	rec    blobRecord
	diffID string
}

func (k *knownBlob) Digest() (v1.Hash, error) { return v1.NewHash(k.rec.Digest) }
func (k *knownBlob) DiffID() (v1.Hash, error) { return v1.NewHash(k.diffID) }
func (k *knownBlob) Size() (int64, error)     { return k.rec.Size, nil }
func (k *knownBlob) MediaType() (types.MediaType, error) {
	if k.rec.Compression == "" {
		return types.OCILayer, nil // not known yet; go-containerregistry only checks it is distributable
	}
	return layerMediaType(PushOCI, types.MediaType(k.rec.Compression))
}
func (k *knownBlob) Compressed() (io.ReadCloser, error)   { return nil, errNotReproducible }
func (k *knownBlob) Uncompressed() (io.ReadCloser, error) { return nil, errNotReproducible }

// genLayer is a blob strata makes from a stored layer: its exact tar
// (tar-split), compressed, streamed. Its digest is known beforehand when
// known is set (the tar itself, or a blob the same generator made before);
// otherwise it is computed while the blob is uploaded (go-containerregistry
// then streams it, as with stream.Layer).
type genLayer struct {
	s        *Store
	diffID   string
	size     int64
	comp     string
	known    *blobRecord
	progress func(int64)

	mu       sync.Mutex
	digest   v1.Hash
	csize    int64
	computed bool
	failure  error // why making the blob failed
}

func (g *genLayer) fail(err error) {
	g.mu.Lock()
	if g.failure == nil {
		g.failure = err
	}
	g.mu.Unlock()
}

func (g *genLayer) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failure
}

func (g *genLayer) Digest() (v1.Hash, error) {
	if g.known != nil {
		return v1.NewHash(g.known.Digest)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.computed {
		return v1.Hash{}, stream.ErrNotComputed
	}
	return g.digest, nil
}

func (g *genLayer) DiffID() (v1.Hash, error) { return v1.NewHash(g.diffID) }

func (g *genLayer) Size() (int64, error) {
	if g.known != nil {
		return g.known.Size, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.computed {
		return 0, stream.ErrNotComputed
	}
	return g.csize, nil
}

func (g *genLayer) MediaType() (types.MediaType, error) {
	return layerMediaType(PushOCI, types.MediaType(g.comp))
}

func (g *genLayer) Uncompressed() (io.ReadCloser, error) { return g.s.openLayerTar(g.diffID) }

// Compressed reassembles the tar, checks it against the diffID, and
// compresses it, in a goroutine feeding a pipe.
func (g *genLayer) Compressed() (io.ReadCloser, error) {
	tr, err := g.s.openLayerTar(g.diffID)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		var w io.WriteCloser
		switch g.comp {
		case CompressGzip:
			gw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
			w = gw
		case CompressZstd:
			zw, err := zstd.NewWriter(pw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
			if err != nil {
				tr.Close()
				pw.CloseWithError(err)
				return
			}
			w = zw
		default:
			w = nopWriteCloser{pw}
		}
		h := sha256.New()
		cr := &countingReader{r: io.TeeReader(tr, h), progress: g.progress}
		n, err := io.Copy(w, cr)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		tr.Close()
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); err == nil && (n != g.size || got != g.diffID) {
			err = fmt.Errorf("%w: the tar made from the store hashes to %s (%d bytes), not the diffID", ErrDigestMismatch, got, n)
		}
		pw.CloseWithError(err)
	}()
	return &genReader{g: g, pr: pr, h: sha256.New()}, nil
}

type genReader struct {
	g  *genLayer
	pr *io.PipeReader
	h  interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (r *genReader) Read(p []byte) (int, error) {
	n, err := r.pr.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if err != nil && err != io.EOF {
		r.g.fail(err)
	}
	if err == io.EOF {
		d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(r.h.Sum(nil))}
		if k := r.g.known; k != nil {
			if d.String() != k.Digest || r.n != k.Size {
				err = fmt.Errorf("%w: %s (%d bytes), noted %s", errGeneratorChanged, d, r.n, k.Digest)
				r.g.fail(err)
			}
			return n, err
		}
		r.g.mu.Lock()
		r.g.digest, r.g.csize, r.g.computed = d, r.n, true
		r.g.mu.Unlock()
	}
	return n, err
}

func (r *genReader) Close() error {
	r.pr.CloseWithError(errors.New("blob reader closed"))
	return nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

type countingReader struct {
	r        io.Reader
	n, last  int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && c.n-c.last >= 256<<10 {
		c.progress(c.n)
		c.last = c.n
	}
	return n, err
}
