package layerstore

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Export formats.
const (
	ExportDocker = "docker" // docker save / docker-archive
	ExportOCI    = "oci"    // an OCI image layout, as a tar
)

// ExportOptions tune Export.
type ExportOptions struct {
	Format string // ExportDocker (default) or ExportOCI
	// RepoTags name the image in the archive (NAME:TAG, familiar or full);
	// none leaves it unnamed.
	RepoTags []string
}

// Export writes img as a single tar stream in one pass: a docker save
// archive (manifest.json, the config as <id>.json, each layer as
// <diffID>.tar, the legacy <v1 id>/{json,VERSION,layer.tar} and
// repositories, as containers/image writes them) or an OCI image layout
// (oci-layout, index.json naming the image with
// org.opencontainers.image.ref.name = TAG and io.containerd.image.name =
// the full name, blobs/sha256/...). Layers are the original tars,
// uncompressed, reassembled byte for byte from the store (tarsplit.go) and
// checked against their diffIDs, and the config is kept byte for byte, so
// importing the export gives the same image ID. The manifest and index use
// go-containerregistry's types.
func (s *Store) Export(ctx context.Context, img *Image, w io.Writer, o ExportOptions) error {
	fail := func(err error) error { return fmt.Errorf("export %s: %w", ShortID(img.ID), err) }
	if o.Format == "" {
		o.Format = ExportDocker
	}
	if o.Format != ExportDocker && o.Format != ExportOCI {
		return fail(fmt.Errorf("format %q is not docker or oci", o.Format))
	}
	var refs []parsedRef
	for _, t := range o.RepoTags {
		pr, err := parseTagRef(t)
		if err != nil {
			return fail(err)
		}
		refs = append(refs, pr)
	}
	// Every layer must be reproducible before a byte is written.
	for _, l := range img.Layers {
		if err := s.checkTarSplit(l.DiffID); err != nil {
			return fail(err)
		}
	}
	ew := &exportWriter{s: s, ctx: ctx, tw: tar.NewWriter(w), written: map[string]bool{}}
	var err error
	if o.Format == ExportDocker {
		err = ew.docker(img, refs)
	} else {
		err = ew.oci(img, refs)
	}
	if err == nil {
		err = ew.tw.Close()
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

func (s *Store) checkTarSplit(diffID string) error {
	rc, err := s.openLayerTar(diffID)
	if err != nil {
		return err
	}
	rc.Close()
	return nil
}

type exportWriter struct {
	s       *Store
	ctx     context.Context
	tw      *tar.Writer
	written map[string]bool
}

func (e *exportWriter) header(name string, typ byte, size int64, mode int64, link string) error {
	return e.tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Size: size, Mode: mode, Linkname: link, ModTime: time.Unix(0, 0)})
}

func (e *exportWriter) file(name string, b []byte) error {
	if e.written[name] {
		return nil
	}
	e.written[name] = true
	if err := e.header(name, tar.TypeReg, int64(len(b)), 0o444, ""); err != nil {
		return err
	}
	_, err := e.tw.Write(b)
	return err
}

// layer writes a stored layer's original tar under name, checking its diffID.
func (e *exportWriter) layer(name string, l LayerInfo) error {
	if e.written[name] {
		return nil
	}
	e.written[name] = true
	rc, err := e.s.openLayerTar(l.DiffID)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := e.header(name, tar.TypeReg, l.Size, 0o444, ""); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(e.tw, h), ctxReader{e.ctx, io.LimitReader(rc, l.Size+1)})
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.DiffID, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != l.Size || got != l.DiffID {
		return fmt.Errorf("layer %s: %w: reassembled %d bytes hashing to %s, expected %d bytes", l.DiffID, ErrDigestMismatch, n, got, l.Size)
	}
	return nil
}

func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }

func (e *exportWriter) docker(img *Image, refs []parsedRef) error {
	var layerFiles []string
	for _, l := range img.Layers {
		name := hexOf(l.DiffID) + ".tar"
		if err := e.layer(name, l); err != nil {
			return err
		}
		layerFiles = append(layerFiles, name)
	}
	cfgName := img.ID + ".json"
	if err := e.file(cfgName, img.ConfigJSON); err != nil {
		return err
	}
	// The legacy v1 view: a json per layer chained by parent, as
	// containers/image writes it (IDs from the chain ID and the config digest).
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(img.ConfigJSON, &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	chain, parent := "", ""
	for i, l := range img.Layers {
		if chain == "" {
			chain = l.DiffID
		} else {
			chain = "sha256:" + sha256Hex([]byte(chain+" "+l.DiffID))
		}
		id := sha256Hex([]byte(chain + " sha256:" + img.ID))
		j := map[string]any{"id": id}
		if parent != "" {
			j["parent"] = parent
		}
		if i == len(img.Layers)-1 {
			for _, k := range []string{"architecture", "config", "container", "container_config", "created", "docker_version", "os"} {
				if v, ok := cfg[k]; ok {
					j[k] = v
				}
			}
		}
		jb, err := marshalNoEscape(j)
		if err != nil {
			return err
		}
		if !e.written[id] {
			if err := e.header(id+"/layer.tar", tar.TypeSymlink, 0, 0o777, "../"+layerFiles[i]); err != nil {
				return err
			}
			if err := e.file(id+"/VERSION", []byte("1.0")); err != nil {
				return err
			}
			if err := e.file(id+"/json", jb); err != nil {
				return err
			}
			e.written[id] = true
		}
		parent = id
	}
	var tags []string
	repos := map[string]map[string]string{}
	for _, r := range refs {
		fam := FamiliarRef(r.String())
		tags = append(tags, fam)
		repo := FamiliarName(r.Repo)
		if repos[repo] == nil {
			repos[repo] = map[string]string{}
		}
		repos[repo][r.Tag] = parent
	}
	m, err := marshalNoEscape(tarball.Manifest{{Config: cfgName, RepoTags: tags, Layers: layerFiles}})
	if err != nil {
		return err
	}
	if err := e.file("manifest.json", m); err != nil {
		return err
	}
	if len(repos) > 0 {
		rb, err := marshalNoEscape(repos)
		if err != nil {
			return err
		}
		if err := e.file("repositories", rb); err != nil {
			return err
		}
	}
	return nil
}

func (e *exportWriter) oci(img *Image, refs []parsedRef) error {
	if err := e.file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := e.header(d, tar.TypeDir, 0, 0o755, ""); err != nil {
			return err
		}
	}
	man := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for _, l := range img.Layers {
		if err := e.layer("blobs/sha256/"+hexOf(l.DiffID), l); err != nil {
			return err
		}
		h, err := v1.NewHash(l.DiffID)
		if err != nil {
			return err
		}
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: l.Size, Digest: h})
	}
	if err := e.file("blobs/sha256/"+img.ID, img.ConfigJSON); err != nil {
		return err
	}
	man.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(img.ConfigJSON)), Digest: v1.Hash{Algorithm: "sha256", Hex: img.ID}}
	mb, err := marshalNoEscape(man)
	if err != nil {
		return err
	}
	mh := sha256Hex(mb)
	if err := e.file("blobs/sha256/"+mh, mb); err != nil {
		return err
	}
	desc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(mb)), Digest: v1.Hash{Algorithm: "sha256", Hex: mh}}
	if c := img.Config; c != nil && c.OS != "" && c.Architecture != "" {
		desc.Platform = &v1.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant, OSVersion: c.OSVersion}
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	for _, r := range refs {
		d := desc
		d.Annotations = map[string]string{annRefName: r.Tag, annContainerName: r.String()}
		idx.Manifests = append(idx.Manifests, d)
	}
	if len(refs) == 0 {
		idx.Manifests = append(idx.Manifests, desc)
	}
	ib, err := marshalNoEscape(idx)
	if err != nil {
		return err
	}
	return e.file("index.json", ib)
}

// TagOf returns the familiar NAME:TAG when ref names the image by a tag
// (not by an ID, an ID prefix or a digest).
func (s *Store) TagOf(ref string) (string, bool) {
	pr, err := parseRef(ref)
	if err != nil || pr.Digest != "" {
		return "", false
	}
	repos, err := s.loadRepos()
	if err != nil {
		return "", false
	}
	if _, ok := repos.get(pr); !ok {
		return "", false
	}
	return FamiliarRef(pr.String()), true
}
