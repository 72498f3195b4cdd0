package layerstore

import (
	"bufio"
	"hash"
	"path/filepath"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The import sources. Each format adapter turns its archive into a list of
// imageSource values; the importer does not care where they came from.

type imageSource struct {
	desc       string // for messages
	configJSON []byte // nil for legacy v1 until its layers are hashed
	id         string
	refs       []parsedRef
	manifest   string // manifest digest when known (OCI)
	bareTag    string // OCI ref.name that is only a tag ("latest"): needs a name from --tag
	layers     []*layerSource
	legacy     [][]byte // legacy v1: each layer's json, bottom-up
}

type layerSource struct {
	name   string // path in the archive
	diffID string // expected sha256:<hex>; "" when the format does not say (legacy v1)
	digest string // expected blob digest; "" when unknown
	size   int64  // expected blob size; -1 when unknown
	set    fileSet
}

func (l *layerSource) open() (io.ReadCloser, int64, error) { return l.set.open(l.name) }

// source is an opened archive.
type source struct {
	format   string // docker-archive, oci, legacy-v1
	set      fileSet
	images   []*imageSource
	warnings []string
}

func (s *source) warnf(format string, args ...any) {
	s.warnings = append(s.warnings, fmt.Sprintf(format, args...))
}

// openSource detects the format of a file or directory and parses its
// image metadata (no layer is read yet). p may be "-" for stdin. A tar that
// cannot be read with random access (a pipe) or that is compressed (docker
// save | gzip) is first copied, decompressed, into an unlinked file in tmpDir.
func openSource(p, tmpDir string, o extractOptions) (*source, error) {
	var set fileSet
	var f *os.File
	if p == "-" {
		f = os.Stdin
	} else {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			ds, err := openDirSet(p)
			if err != nil {
				return nil, err
			}
			set = ds
		} else if f, err = os.Open(p); err != nil {
			return nil, err
		}
	}
	if f != nil {
		ts, err := openArchiveFile(f, p, tmpDir, o)
		if err != nil {
			if f != os.Stdin {
				f.Close()
			}
			return nil, err
		}
		set = ts
	}
	var err error
	src := &source{set: set}
	switch {
	case set.exists("index.json") || set.exists("oci-layout"):
		src.format = "oci"
		err = src.parseOCI()
	case set.exists("manifest.json"):
		src.format = "docker-archive"
		err = src.parseDocker()
	case set.exists("repositories"):
		src.format = "legacy-v1"
		err = src.parseLegacy()
	default:
		err = fmt.Errorf("no index.json, manifest.json or repositories: %w", ErrUnknownFormat)
	}
	if err == nil && len(src.images) == 0 {
		err = fmt.Errorf("%s archive holds no image: %w", src.format, ErrInvalidImage)
	}
	if err != nil {
		set.Close()
		return nil, err
	}
	return src, nil
}

func (s *source) Close() error { return s.set.Close() }

// openArchiveFile indexes an archive file, spooling it first when it is
// compressed or not seekable.
func openArchiveFile(f *os.File, p, tmpDir string, o extractOptions) (*tarSet, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	magic, _ := br.Peek(4)
	comp := detectCompression(magic)
	if comp == "none" && st.Mode().IsRegular() {
		return openTarSet(f)
	}
	in := &hashReader{r: br, h: nopHash{}}
	var r io.Reader = in
	switch comp {
	case "gzip":
		gz, err := gzip.NewReader(in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", p, ErrUnknownFormat, err)
		}
		defer gz.Close()
		r = &ratioReader{r: corruptReader{gz, comp}, in: in, maxRatio: o.maxRatio, floor: o.floor}
	case "zstd":
		zr, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(256<<20))
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", p, ErrUnknownFormat, err)
		}
		defer zr.Close()
		r = &ratioReader{r: corruptReader{zr, comp}, in: in, maxRatio: o.maxRatio, floor: o.floor}
	}
	fd, err := unix.Open(tmpDir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spooling %s: %w", p, err)
	}
	tmp := os.NewFile(uintptr(fd), filepath.Join(tmpDir, "spool"))
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("reading %s: %w", p, classify(err))
	}
	if f != os.Stdin {
		f.Close()
	}
	ts, err := openTarSet(tmp)
	if err != nil {
		tmp.Close()
		return nil, err
	}
	return ts, nil
}

// nopHash counts nothing; hashReader is reused only for its byte count.
type nopHash struct{ hash.Hash }

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidImage)
}

// blobHexFromPath returns the hex of "blobs/sha256/<hex>" or "<hex>.json" /
// "<hex>.tar" names, which promise their own digest.
func blobHexFromPath(p string) string {
	p = tarSetName(p)
	if h, ok := strings.CutPrefix(p, "blobs/sha256/"); ok && len(h) == 64 && hexRe().MatchString(h) {
		return h
	}
	if h, ok := strings.CutSuffix(p, ".json"); ok && len(h) == 64 && hexRe().MatchString(h) {
		return h
	}
	return ""
}

// configLayers parses a config and returns its diff_ids.
func configDiffIDs(cfg []byte) ([]string, error) {
	c, err := v1.ParseConfigFile(bytes.NewReader(cfg))
	if err != nil {
		return nil, invalid("config is not a valid image config JSON: %v", err)
	}
	var out []string
	for _, d := range c.RootFS.DiffIDs {
		if d.Algorithm != "sha256" || len(d.Hex) != 64 || !hexRe().MatchString(d.Hex) {
			return nil, invalid("config: diff_id %q is not sha256", d.String())
		}
		out = append(out, d.String())
	}
	return out, nil
}

// addRef adds a name the archive gives the image. A name that breaks the
// rules refuses the archive, as docker load does: importing the image
// without the name its author gave it would hide the problem.
func (s *source) addRef(img *imageSource, r string) error {
	pr, err := parseTagRef(r)
	if err != nil {
		return fmt.Errorf("%s: tag: %w", img.desc, err)
	}
	img.refs = append(img.refs, pr)
	return nil
}

// --- docker save ---------------------------------------------------------

type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func (s *source) parseDocker() error {
	b, err := readSmall(s.set, "manifest.json")
	if err != nil {
		return invalid("manifest.json: %v", err)
	}
	var ms []dockerManifest
	if err := json.Unmarshal(b, &ms); err != nil {
		return invalid("manifest.json: %v", err)
	}
	for i, m := range ms {
		img := &imageSource{desc: fmt.Sprintf("manifest.json[%d]", i)}
		cfg, err := readSmall(s.set, m.Config)
		if err != nil {
			return invalid("%s: config: %v", img.desc, err)
		}
		img.configJSON, img.id = cfg, sha256Hex(cfg)
		if h := blobHexFromPath(m.Config); h != "" && h != img.id {
			return fmt.Errorf("%s: config %s: %w: content is sha256:%s, name says sha256:%s", img.desc, m.Config, ErrDigestMismatch, img.id, h)
		}
		diffIDs, err := configDiffIDs(cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", img.desc, err)
		}
		if len(diffIDs) != len(m.Layers) {
			return invalid("%s: %d layers but the config lists %d diff_ids", img.desc, len(m.Layers), len(diffIDs))
		}
		for j, lp := range m.Layers {
			ls := &layerSource{name: tarSetName(lp), diffID: diffIDs[j], size: -1, set: s.set}
			if h := blobHexFromPath(lp); h != "" && strings.HasPrefix(tarSetName(lp), "blobs/") {
				ls.digest = "sha256:" + h
			}
			img.layers = append(img.layers, ls)
		}
		for _, t := range m.RepoTags {
			if err := s.addRef(img, t); err != nil {
				return err
			}
		}
		s.images = append(s.images, img)
	}
	return nil
}

// --- OCI image layout ----------------------------------------------------

const (
	annRefName       = "org.opencontainers.image.ref.name"
	annContainerName = "io.containerd.image.name"
	maxIndexDepth    = 8
)

func blobPath(d v1.Hash) (string, error) {
	if d.Algorithm != "sha256" || len(d.Hex) != 64 || !hexRe().MatchString(d.Hex) {
		return "", invalid("digest %q is not sha256", d.String())
	}
	return "blobs/sha256/" + d.Hex, nil
}

// readBlob reads a metadata blob and checks its digest and size.
func (s *source) readBlob(d v1.Descriptor) ([]byte, error) {
	p, err := blobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	b, err := readSmall(s.set, p)
	if err != nil {
		return nil, invalid("blob %s: %v", d.Digest, err)
	}
	if got := sha256Hex(b); got != d.Digest.Hex {
		return nil, fmt.Errorf("blob %s: %w: content is sha256:%s", d.Digest, ErrDigestMismatch, got)
	}
	if d.Size > 0 && int64(len(b)) != d.Size {
		return nil, fmt.Errorf("blob %s: %w: %d bytes, descriptor says %d", d.Digest, ErrDigestMismatch, len(b), d.Size)
	}
	return b, nil
}

func (s *source) parseOCI() error {
	b, err := readSmall(s.set, "index.json")
	if err != nil {
		return invalid("index.json: %v", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return invalid("index.json: %v", err)
	}
	for _, d := range idx.Manifests {
		if err := s.ociDescriptor(d, refNameOf(d), 0); err != nil {
			return err
		}
	}
	return nil
}

// refNameOf is the name a descriptor carries: a full reference or a tag.
func refNameOf(d v1.Descriptor) string {
	if n := d.Annotations[annContainerName]; n != "" {
		return n
	}
	return d.Annotations[annRefName]
}

func (s *source) ociDescriptor(d v1.Descriptor, ref string, depth int) error {
	if depth > maxIndexDepth {
		return invalid("indexes nested deeper than %d", maxIndexDepth)
	}
	switch {
	case d.MediaType.IsIndex():
		b, err := s.readBlob(d)
		if err != nil {
			return err
		}
		idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return invalid("index %s: %v", d.Digest, err)
		}
		// The outer name goes to the child for this host's platform (or the
		// only/first image); every child is imported.
		pick := -1
		for i, c := range idx.Manifests {
			if c.Platform != nil && c.Platform.OS == runtime.GOOS && c.Platform.Architecture == runtime.GOARCH {
				pick = i
				break
			}
		}
		if pick < 0 && len(idx.Manifests) > 0 {
			pick = 0
		}
		for i, c := range idx.Manifests {
			r := refNameOf(c)
			if i == pick && r == "" {
				r = ref
			}
			if err := s.ociDescriptor(c, r, depth+1); err != nil {
				return err
			}
		}
		return nil
	case d.MediaType.IsImage() || d.MediaType == "":
		return s.ociManifest(d, ref)
	default:
		s.warnf("descriptor %s of type %s skipped", d.Digest, d.MediaType)
		return nil
	}
}

func (s *source) ociManifest(d v1.Descriptor, ref string) error {
	b, err := s.readBlob(d)
	if err != nil {
		return err
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return invalid("manifest %s: %v", d.Digest, err)
	}
	switch m.Config.MediaType {
	case types.OCIConfigJSON, types.DockerConfigJSON, "":
	default:
		s.warnf("manifest %s: config type %s is not an image, skipped", d.Digest, m.Config.MediaType)
		return nil
	}
	img := &imageSource{desc: "manifest " + d.Digest.String(), manifest: d.Digest.String()}
	cfg, err := s.readBlob(m.Config)
	if err != nil {
		return fmt.Errorf("%s: config: %w", img.desc, err)
	}
	img.configJSON, img.id = cfg, m.Config.Digest.Hex
	diffIDs, err := configDiffIDs(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", img.desc, err)
	}
	if len(diffIDs) != len(m.Layers) {
		return invalid("%s: %d layers but the config lists %d diff_ids", img.desc, len(m.Layers), len(diffIDs))
	}
	for i, l := range m.Layers {
		p, err := blobPath(l.Digest)
		if err != nil {
			return fmt.Errorf("%s: layer %d: %w", img.desc, i, err)
		}
		img.layers = append(img.layers, &layerSource{name: p, diffID: diffIDs[i], digest: l.Digest.String(), size: l.Size, set: s.set})
	}
	if ref != "" {
		if strings.ContainsAny(ref, "/:@") {
			if err := s.addRef(img, ref); err != nil {
				return err
			}
		} else if ValidTag(ref) {
			img.bareTag = ref
		} else {
			s.warnf("%s: ref name %q ignored", img.desc, ref)
		}
	}
	// The same image under several names: merge.
	for _, o := range s.images {
		if o.id == img.id {
			o.refs = append(o.refs, img.refs...)
			if o.bareTag == "" {
				o.bareTag = img.bareTag
			}
			return nil
		}
	}
	s.images = append(s.images, img)
	return nil
}

// --- legacy v1 (repositories + <id>/json + <id>/layer.tar) --------------

func (s *source) parseLegacy() error {
	b, err := readSmall(s.set, "repositories")
	if err != nil {
		return invalid("repositories: %v", err)
	}
	var repos map[string]map[string]string
	if err := json.Unmarshal(b, &repos); err != nil {
		return invalid("repositories: %v", err)
	}
	byTop := map[string]*imageSource{}
	var names []string
	for repo, tags := range repos {
		for tag, id := range tags {
			names = append(names, repo+"\x00"+tag+"\x00"+id)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		parts := strings.SplitN(n, "\x00", 3)
		repo, tag, top := parts[0], parts[1], parts[2]
		img := byTop[top]
		if img == nil {
			var err error
			if img, err = s.legacyImage(top); err != nil {
				return err
			}
			byTop[top] = img
			s.images = append(s.images, img)
		}
		if err := s.addRef(img, repo+":"+tag); err != nil {
			return err
		}
	}
	return nil
}

func (s *source) legacyImage(top string) (*imageSource, error) {
	img := &imageSource{desc: "legacy image " + top}
	seen := map[string]bool{}
	var chain [][]byte
	var ids []string
	for id := top; id != ""; {
		if len(id) != 64 || !hexRe().MatchString(id) {
			return nil, invalid("%s: layer id %q is not 64 hex", img.desc, id)
		}
		if seen[id] {
			return nil, invalid("%s: parent chain loops at %s", img.desc, id)
		}
		seen[id] = true
		j, err := readSmall(s.set, id+"/json")
		if err != nil {
			return nil, invalid("%s: %v", img.desc, err)
		}
		var meta struct {
			ID     string `json:"id"`
			Parent string `json:"parent"`
		}
		if err := json.Unmarshal(j, &meta); err != nil {
			return nil, invalid("%s: %s/json: %v", img.desc, id, err)
		}
		chain = append(chain, j)
		ids = append(ids, id)
		id = meta.Parent
	}
	for i := len(chain) - 1; i >= 0; i-- {
		img.legacy = append(img.legacy, chain[i])
		img.layers = append(img.layers, &layerSource{name: ids[i] + "/layer.tar", size: -1, set: s.set})
	}
	return img, nil
}

// legacyConfig makes an image config from v1 layer jsons the way docker's
// v1 migration does: the top json minus the v1 fields, plus rootfs and a
// history entry per layer. The result is deterministic, so reimport gives
// the same image ID.
func legacyConfig(jsons [][]byte, diffIDs []string) ([]byte, error) {
	if len(jsons) == 0 {
		return nil, invalid("legacy image without layers")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(jsons[len(jsons)-1], &top); err != nil {
		return nil, invalid("legacy json: %v", err)
	}
	for _, k := range []string{"id", "parent", "Size", "parent_id", "layer_id", "throwaway"} {
		delete(top, k)
	}
	type hist struct {
		Created   string `json:"created,omitempty"`
		Author    string `json:"author,omitempty"`
		CreatedBy string `json:"created_by,omitempty"`
		Comment   string `json:"comment,omitempty"`
	}
	var history []hist
	for _, j := range jsons {
		var v struct {
			Created         string `json:"created"`
			Author          string `json:"author"`
			Comment         string `json:"comment"`
			ContainerConfig *struct {
				Cmd []string `json:"Cmd"`
			} `json:"container_config"`
		}
		if err := json.Unmarshal(j, &v); err != nil {
			return nil, invalid("legacy json: %v", err)
		}
		h := hist{Created: v.Created, Author: v.Author, Comment: v.Comment}
		if v.ContainerConfig != nil {
			h.CreatedBy = strings.Join(v.ContainerConfig.Cmd, " ")
		}
		history = append(history, h)
	}
	var err error
	set := func(k string, v any) {
		if err == nil {
			top[k], err = json.Marshal(v)
		}
	}
	set("rootfs", map[string]any{"type": "layers", "diff_ids": diffIDs})
	set("history", history)
	if err != nil {
		return nil, err
	}
	return json.Marshal(top) // map keys are sorted: deterministic
}
