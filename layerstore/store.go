package layerstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Store is an image and layer store rooted at one directory. See doc.go for
// the on-disk layout. A Store is safe for use by several goroutines and by
// several processes at once.
type Store struct {
	root string
}

// Image is one imported image.
type Image struct {
	ID          string   // sha256 hex of the config JSON, no prefix
	RepoTags    []string // familiar form: busybox:latest, foo/bar:1
	RepoDigests []string // familiar form: busybox@sha256:...
	Layers      []LayerInfo
	Created     time.Time
	Size        int64 // sum of the layers' uncompressed sizes
	// Config is the parsed image config; ConfigJSON the exact bytes whose
	// sha256 is ID.
	Config     *v1.ConfigFile
	ConfigJSON json.RawMessage
	Imported   time.Time
}

// LayerInfo describes one layer of an image.
type LayerInfo struct {
	DiffID    string // sha256:<hex> of the uncompressed tar
	Digest    string // sha256:<hex> of the blob the image's manifest names, "" when unknown
	Dir       string // absolute path of the extracted tree (kernel overlay format)
	Size      int64  // bytes of the uncompressed tar
	CreatedBy string
	Created   time.Time
	Comment   string
}

// layerMeta is layers/sha256/<hex>/layer.json.
type layerMeta struct {
	DiffID       string    `json:"diff_id"`
	Size         int64     `json:"size"`    // uncompressed tar bytes
	Entries      int       `json:"entries"` // tar entries applied
	BlobDigests  []string  `json:"blob_digests,omitempty"`
	Compressions []string  `json:"compressions,omitempty"`
	OpaqueXattr  string    `json:"opaque_xattr"`
	Imported     time.Time `json:"imported"`
}

// imageMeta is images/<hex>/image.json; the config is beside it.
type imageMeta struct {
	ID       string        `json:"id"`
	Layers   []imageLayer  `json:"layers"`
	Source   string        `json:"source,omitempty"`
	Imported time.Time     `json:"imported"`
	Manifest []string      `json:"manifest_digests,omitempty"`
	Extra    *imageExtraV1 `json:"legacy_v1,omitempty"`
}

type imageLayer struct {
	DiffID string `json:"diff_id"`
	Digest string `json:"digest,omitempty"`
}

type imageExtraV1 struct {
	TopID string `json:"top_id"`
}

// repositories is repositories.json, in docker's format:
// {"Repositories": {"docker.io/library/busybox": {"docker.io/library/busybox:latest": "sha256:<id>"}}}
type repositories struct {
	Repositories map[string]map[string]string `json:"Repositories"`
}

// Open opens (creating when needed) the store at root and removes staging
// directories that interrupted imports left behind.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	for _, d := range []string{"", "layers/sha256", "images", "tmp", "containers", "mounts"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("open store %s: %w", root, err)
		}
	}
	s := &Store{root: abs}
	if _, err := s.cleanTmp(); err != nil {
		return nil, fmt.Errorf("open store %s: cleaning tmp: %w", root, err)
	}
	return s, nil
}

// Root returns the store's absolute root directory.
func (s *Store) Root() string { return s.root }

// lock takes the store's writer lock; call the returned func to release it.
func (s *Store) lock() (func(), error) {
	f, err := lockFile(filepath.Join(s.root, "lock"), false)
	if err != nil {
		return nil, fmt.Errorf("store lock: %w", err)
	}
	return func() { f.Close() }, nil
}

func (s *Store) layerPath(diffID string) string {
	return filepath.Join(s.root, "layers", "sha256", strings.TrimPrefix(diffID, "sha256:"))
}

// LayerDir is the extracted tree of the layer with this diffID.
func (s *Store) LayerDir(diffID string) string {
	return filepath.Join(s.layerPath(diffID), "diff")
}

func (s *Store) imagePath(id string) string {
	return filepath.Join(s.root, "images", id)
}

func (s *Store) hasLayer(diffID string) bool {
	_, err := os.Stat(filepath.Join(s.layerPath(diffID), "layer.json"))
	return err == nil
}

func (s *Store) readLayerMeta(diffID string) (*layerMeta, error) {
	b, err := os.ReadFile(filepath.Join(s.layerPath(diffID), "layer.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("layer %s: %w", diffID, ErrNotFound)
		}
		return nil, err
	}
	var m layerMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("layer %s: layer.json: %w", diffID, err)
	}
	return &m, nil
}

func (s *Store) loadRepos() (*repositories, error) {
	r := &repositories{Repositories: map[string]map[string]string{}}
	b, err := os.ReadFile(filepath.Join(s.root, "repositories.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("repositories.json: %w", err)
	}
	if r.Repositories == nil {
		r.Repositories = map[string]map[string]string{}
	}
	return r, nil
}

// saveRepos writes repositories.json atomically; the caller holds the lock.
func (s *Store) saveRepos(r *repositories) error {
	for k, v := range r.Repositories {
		if len(v) == 0 {
			delete(r.Repositories, k)
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.root, "repositories.json"), append(b, '\n'), 0o600)
}

func (r *repositories) set(ref parsedRef, id string) {
	m := r.Repositories[ref.Repo]
	if m == nil {
		m = map[string]string{}
		r.Repositories[ref.Repo] = m
	}
	m[ref.String()] = "sha256:" + id
}

func (r *repositories) get(ref parsedRef) (string, bool) {
	v, ok := r.Repositories[ref.Repo][ref.String()]
	return strings.TrimPrefix(v, "sha256:"), ok
}

// refsOf returns the full refs (repo:tag and repo@digest) naming id, sorted.
func (r *repositories) refsOf(id string) (tags, digests []string) {
	for _, m := range r.Repositories {
		for ref, v := range m {
			if strings.TrimPrefix(v, "sha256:") != id {
				continue
			}
			if strings.Contains(ref, "@") {
				digests = append(digests, ref)
			} else {
				tags = append(tags, ref)
			}
		}
	}
	sort.Strings(tags)
	sort.Strings(digests)
	return
}

func (s *Store) imageIDs() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "images"))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && len(e.Name()) == 64 && hexRe().MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// Resolve finds the image a reference names: name:tag, name (= :latest),
// name@sha256:..., or a unique image-ID prefix (optionally sha256:-prefixed).
func (s *Store) Resolve(ref string) (*Image, error) {
	repos, err := s.loadRepos()
	if err != nil {
		return nil, err
	}
	id, err := s.resolveID(repos, ref)
	if err != nil {
		return nil, err
	}
	return s.loadImage(id, repos)
}

func (s *Store) resolveID(repos *repositories, ref string) (string, error) {
	if rest, ok := strings.CutPrefix(ref, "sha256:"); ok {
		if !hexRe().MatchString(rest) {
			return "", fmt.Errorf("resolve %q: %w", ref, ErrInvalidReference)
		}
		return s.resolvePrefix(ref, rest)
	}
	pr, perr := parseRef(ref)
	if perr == nil {
		if id, ok := repos.get(pr); ok {
			return id, nil
		}
		if pr.Digest != "" {
			// name@<image id> also names the image when the name is one of its repositories.
			id := strings.TrimPrefix(pr.Digest, "sha256:")
			for k, v := range repos.Repositories[pr.Repo] {
				_ = k
				if strings.TrimPrefix(v, "sha256:") == id {
					return id, nil
				}
			}
		}
	}
	if hexRe().MatchString(ref) {
		return s.resolvePrefix(ref, ref)
	}
	if perr != nil {
		return "", fmt.Errorf("resolve: %w", perr)
	}
	return "", fmt.Errorf("image %q: %w", ref, ErrNotFound)
}

func (s *Store) resolvePrefix(ref, prefix string) (string, error) {
	ids, err := s.imageIDs()
	if err != nil {
		return "", err
	}
	var match []string
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			match = append(match, id)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("image %q: %w", ref, ErrNotFound)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("image ID prefix %q matches %d images: %w", prefix, len(match), ErrAmbiguous)
}

func (s *Store) loadImage(id string, repos *repositories) (*Image, error) {
	dir := s.imagePath(id)
	mb, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("image %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	var meta imageMeta
	if err := json.Unmarshal(mb, &meta); err != nil {
		return nil, fmt.Errorf("image %s: image.json: %w", id, err)
	}
	cb, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", id, err)
	}
	img := &Image{ID: id, Config: cfg, ConfigJSON: cb, Created: cfg.Created.Time, Imported: meta.Imported}
	tags, digests := repos.refsOf(id)
	for _, t := range tags {
		img.RepoTags = append(img.RepoTags, FamiliarRef(t))
	}
	for _, d := range digests {
		img.RepoDigests = append(img.RepoDigests, FamiliarRef(d))
	}
	// History entries without a layer are skipped; the rest pair with layers.
	var hist []v1.History
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			hist = append(hist, h)
		}
	}
	for i, l := range meta.Layers {
		li := LayerInfo{DiffID: l.DiffID, Digest: l.Digest, Dir: s.LayerDir(l.DiffID)}
		if lm, err := s.readLayerMeta(l.DiffID); err == nil {
			li.Size = lm.Size
		} else {
			return nil, fmt.Errorf("image %s: %w", id, err)
		}
		if len(hist) == len(meta.Layers) {
			li.CreatedBy, li.Created, li.Comment = hist[i].CreatedBy, hist[i].Created.Time, hist[i].Comment
		}
		img.Size += li.Size
		img.Layers = append(img.Layers, li)
	}
	return img, nil
}

// Images returns every image, newest first.
func (s *Store) Images() ([]*Image, error) {
	repos, err := s.loadRepos()
	if err != nil {
		return nil, err
	}
	ids, err := s.imageIDs()
	if err != nil {
		return nil, err
	}
	var imgs []*Image
	for _, id := range ids {
		img, err := s.loadImage(id, repos)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	sort.Slice(imgs, func(i, j int) bool {
		if !imgs[i].Created.Equal(imgs[j].Created) {
			return imgs[i].Created.After(imgs[j].Created)
		}
		return imgs[i].ID < imgs[j].ID
	})
	return imgs, nil
}

// LowerDirs returns the image's extracted layer dirs, top-most first: the
// order of overlayfs' lowerdir option.
func (s *Store) LowerDirs(img *Image) []string {
	dirs := make([]string, 0, len(img.Layers))
	for i := len(img.Layers) - 1; i >= 0; i-- {
		dirs = append(dirs, img.Layers[i].Dir)
	}
	return dirs
}

// ContainerDirs returns root/containers/<name>/{upper,work}, creating them.
func (s *Store) ContainerDirs(name string) (upper, work string, err error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return "", "", fmt.Errorf("container name %q: %w", name, ErrInvalidReference)
	}
	base := filepath.Join(s.root, "containers", name)
	upper, work = filepath.Join(base, "upper"), filepath.Join(base, "work")
	if err := os.MkdirAll(upper, 0o755); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return "", "", err
	}
	return upper, work, nil
}

// ShortID is the 12-hex form of an image ID.
func ShortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
