package hostile

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Builders for the archives of the corpus: layer tars (through archive/tar
// where it can write the entry, by hand where it refuses), docker-archive
// and OCI layout images around them. Everything is deterministic, so a
// failing case can be rebuilt byte for byte.

var epoch = time.Unix(1700000000, 0)

// entry is one tar entry: a header and the bytes that follow it.
type entry struct {
	hdr  tar.Header
	body []byte
	raw  []byte // when set, written as is (header and data blocks): hand-made entries
}

func reg(name, body string, mode int64) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body)), ModTime: epoch}, body: []byte(body)}
}

func dir(name string, mode int64) entry {
	return entry{hdr: tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: epoch}}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: epoch}}
}

func hardlink(name, target string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, ModTime: epoch}}
}

func device(name string, typ byte, major, minor, mode int64) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: typ, Devmajor: major, Devminor: minor, Mode: mode, ModTime: epoch}}
}

func raw(b []byte) entry { return entry{raw: b} }

// mkTar writes the entries and the end-of-archive blocks.
func mkTar(ents ...entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		if e.raw != nil {
			if err := tw.Flush(); err != nil {
				return nil, err
			}
			buf.Write(e.raw)
			continue
		}
		h := e.hdr
		if len(h.PAXRecords) > 0 && h.Format == 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// rawHeader is a ustar header block made by hand; edit may change any field
// before the checksum is computed (negative sizes, sparse maps, bad magic).
func rawHeader(name string, typ byte, size int64, edit func(h []byte)) []byte {
	h := make([]byte, 512)
	copy(h[0:100], name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", size))
	copy(h[136:], fmt.Sprintf("%011o\x00", epoch.Unix()))
	h[156] = typ
	copy(h[257:], "ustar\x0000")
	if edit != nil {
		edit(h)
	}
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

// pad512 pads b to a whole number of tar blocks.
func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstdBytes(b []byte) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		panic(err) // only for invalid options
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// image is one image to put into an archive.
type image struct {
	layers  [][]byte // uncompressed tars (their sha256 are the diff_ids)
	blobs   [][]byte // stored blob per layer when it differs (compressed, corrupted); nil = the tar
	diffIDs []string // overrides the computed diff_ids when non-nil
	tags    []string
	label   string // makes the config, hence the image ID, unique
	config  []byte // overrides the generated config when non-nil
}

func (im image) blob(i int) []byte {
	if i < len(im.blobs) && im.blobs[i] != nil {
		return im.blobs[i]
	}
	return im.layers[i]
}

func (im image) configJSON() []byte {
	if im.config != nil {
		return im.config
	}
	ids := im.diffIDs
	if ids == nil {
		for _, l := range im.layers {
			ids = append(ids, "sha256:"+sha(l))
		}
	}
	var hist []map[string]string
	for i := range ids {
		hist = append(hist, map[string]string{"created": "2024-01-02T03:04:05Z", "created_by": fmt.Sprintf("layer %d", i+1)})
	}
	b, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
		"config": map[string]any{"Labels": map[string]string{"hostile": im.label}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": ids}, "history": hist,
	})
	return b
}

// ID is the image ID strata must give the image.
func (im image) ID() string { return sha(im.configJSON()) }

// file is one member of an outer archive.
type file struct {
	name string
	data []byte
	link string // a symlink when set
}

// docker lays out a docker-save archive: <config hex>.json, <blob hex>.tar
// and manifest.json (edited by editManifest when set).
func docker(imgs []image, editManifest func(m []map[string]any)) []file {
	var files []file
	seen := map[string]bool{}
	add := func(f file) {
		if !seen[f.name] {
			seen[f.name] = true
			files = append(files, f)
		}
	}
	var manifest []map[string]any
	for _, im := range imgs {
		cfg := im.configJSON()
		cname := sha(cfg) + ".json"
		add(file{name: cname, data: cfg})
		var layers []string
		for i := range im.layers {
			b := im.blob(i)
			n := sha(b) + ".tar"
			add(file{name: n, data: b})
			layers = append(layers, n)
		}
		tags := im.tags
		if tags == nil {
			tags = []string{}
		}
		manifest = append(manifest, map[string]any{"Config": cname, "RepoTags": tags, "Layers": layers})
	}
	if editManifest != nil {
		editManifest(manifest)
	}
	m, _ := json.Marshal(manifest)
	return append(files, file{name: "manifest.json", data: m})
}

// ociOpts edits an OCI layout as it is built.
type ociOpts struct {
	// blob returns what is stored for a blob of this kind ("config",
	// "layer", "manifest"): b itself, other bytes (a lying blob) or nil
	// (the blob is missing).
	blob func(kind string, b []byte) []byte
	// editManifest changes each manifest before it is hashed.
	editManifest func(m map[string]any)
	// wrap nests each manifest descriptor in this many indexes.
	wrap int
}

func oci(imgs []image, o ociOpts) []file {
	var files []file
	put := func(kind string, b []byte) (string, int64) {
		d := "sha256:" + sha(b)
		data := b
		if o.blob != nil {
			data = o.blob(kind, b)
		}
		if data != nil {
			files = append(files, file{name: "blobs/sha256/" + d[7:], data: data})
		}
		return d, int64(len(b))
	}
	var descs []any
	for _, im := range imgs {
		cd, cs := put("config", im.configJSON())
		var layers []any
		for j := range im.layers {
			d, s := put("layer", im.blob(j))
			layers = append(layers, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})
		}
		m := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers}
		if o.editManifest != nil {
			o.editManifest(m)
		}
		mb, _ := json.Marshal(m)
		md, ms := put("manifest", mb)
		desc := map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}
		for k := 0; k < o.wrap; k++ {
			ib, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{desc}})
			id, is := put("index", ib)
			desc = map[string]any{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": is}
		}
		if len(im.tags) > 0 {
			desc["annotations"] = map[string]string{"org.opencontainers.image.ref.name": im.tags[0]}
		}
		descs = append(descs, desc)
	}
	ib, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": descs})
	return append(files, file{name: "index.json", data: ib}, file{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)})
}

// tarOf packs archive members into a tar, in a stable order
// (manifest.json/index.json last, as docker save and skopeo write them).
func tarOf(files []file) ([]byte, error) {
	sorted := append([]file(nil), files...)
	sort.SliceStable(sorted, func(i, j int) bool { return rank(sorted[i].name) < rank(sorted[j].name) })
	var ents []entry
	for _, f := range sorted {
		if f.link != "" {
			ents = append(ents, symlink(f.name, f.link))
		} else {
			ents = append(ents, reg(f.name, string(f.data), 0o644))
		}
	}
	return mkTar(ents...)
}

func rank(name string) int {
	switch name {
	case "manifest.json", "index.json", "oci-layout", "repositories":
		return 1
	}
	return 0
}

// writeTar writes the members as a tar file dir/name.
func writeTar(dir, name string, files []file) (string, error) {
	b, err := tarOf(files)
	if err != nil {
		return "", err
	}
	return writeFile(dir, name, b)
}

func writeFile(dir, name string, b []byte) (string, error) {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return "", err
	}
	return p, nil
}

// writeDir writes the members into the directory dir/name (an OCI layout
// or docker-archive directory).
func writeDir(dir, name string, files []file) (string, error) {
	root := filepath.Join(dir, name)
	for _, f := range files {
		p := filepath.Join(root, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		var err error
		if f.link != "" {
			err = os.Symlink(f.link, p)
		} else {
			err = os.WriteFile(p, f.data, 0o644)
		}
		if err != nil {
			return "", err
		}
	}
	return root, nil
}
