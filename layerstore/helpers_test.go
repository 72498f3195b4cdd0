package layerstore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Test helpers: archives built in Go, and a canonical dump of a tree.

// ent is one tar entry for mkTar.
type ent struct {
	hdr  tar.Header
	body string
}

func file(name, body string, mode int64) ent {
	return ent{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body)), ModTime: time.Unix(1000, 0)}, body}
}
func dir(name string, mode int64) ent {
	return ent{hdr: tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: time.Unix(1000, 0)}}
}
func symlink(name, target string) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: time.Unix(1000, 0)}}
}
func hardlink(name, target string) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, ModTime: time.Unix(1000, 0)}}
}

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if h.Format == 0 && len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("mkTar %s: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstdBytes(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// testImage is an image to put into an archive: uncompressed layer tars
// plus how each is stored.
type testImage struct {
	layers [][]byte // uncompressed tars
	comp   []string // per layer: "", "gzip", "zstd"
	tags   []string // docker RepoTags / OCI ref names
	label  string   // makes the config (and the ID) unique
	// corruptions
	badDiffID int      // 1-based layer index whose diff_id is wrong
	override  [][]byte // non-nil entries replace the stored blob of that layer
}

func (ti testImage) blob(t testing.TB, i int) []byte {
	if i < len(ti.override) && ti.override[i] != nil {
		return ti.override[i]
	}
	c := ""
	if i < len(ti.comp) {
		c = ti.comp[i]
	}
	switch c {
	case "gzip":
		return gzipBytes(t, ti.layers[i])
	case "zstd":
		return zstdBytes(t, ti.layers[i])
	}
	return ti.layers[i]
}

func (ti testImage) config(t testing.TB) []byte {
	var diffIDs []string
	var hist []map[string]string
	for i, l := range ti.layers {
		d := digestOf(l)
		if ti.badDiffID == i+1 {
			d = digestOf([]byte("something else"))
		}
		diffIDs = append(diffIDs, d)
		hist = append(hist, map[string]string{"created": "2024-01-02T03:04:05Z", "created_by": fmt.Sprintf("step %d", i+1)})
	}
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
		"config": map[string]any{"Labels": map[string]string{"test": ti.label}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}, "history": hist,
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (ti testImage) id(t testing.TB) string { return digestOf(ti.config(t))[7:] }

// tarFiles writes name->content (and symlinks when content starts with "->") into a tar.
func tarFiles(t testing.TB, files [][2]string) []byte {
	var ents []ent
	for _, f := range files {
		if target, ok := strings.CutPrefix(f[1], "->"); ok {
			ents = append(ents, symlink(f[0], target))
		} else {
			ents = append(ents, file(f[0], f[1], 0o444))
		}
	}
	return mkTar(t, ents...)
}

// dockerArchive builds a docker save tar. With legacy, it adds <id>/json,
// VERSION, repositories and makes <id>/layer.tar a symlink to the blob (as skopeo does).
func dockerArchive(t testing.TB, legacy bool, imgs ...testImage) []byte {
	var files [][2]string
	var manifest []map[string]any
	seen := map[string]bool{}
	for _, im := range imgs {
		cfg := im.config(t)
		cname := digestOf(cfg)[7:] + ".json"
		if !seen[cname] {
			files = append(files, [2]string{cname, string(cfg)})
			seen[cname] = true
		}
		var layers []string
		parent := ""
		for i := range im.layers {
			b := im.blob(t, i)
			name := digestOf(b)[7:] + ".tar"
			if !seen[name] {
				files = append(files, [2]string{name, string(b)})
				seen[name] = true
			}
			if legacy {
				lid := digestOf([]byte(parent + name))[7:]
				if !seen[lid] {
					files = append(files, [2]string{lid + "/layer.tar", "->../" + name})
					j, _ := json.Marshal(map[string]string{"id": lid, "parent": parent})
					files = append(files, [2]string{lid + "/json", string(j)}, [2]string{lid + "/VERSION", "1.0"})
					seen[lid] = true
				}
				parent = lid
				name = lid + "/layer.tar"
			}
			layers = append(layers, name)
		}
		manifest = append(manifest, map[string]any{"Config": cname, "RepoTags": im.tags, "Layers": layers})
	}
	m, _ := json.Marshal(manifest)
	files = append(files, [2]string{"manifest.json", string(m)})
	return tarFiles(t, files)
}

// legacyArchive builds a pre-manifest.json docker save (v1): repositories,
// <id>/json with parent chains, <id>/layer.tar.
func legacyArchive(t testing.TB, tag string, layers ...[]byte) []byte {
	var files [][2]string
	parent := ""
	for i, l := range layers {
		id := digestOf([]byte(fmt.Sprintf("%s-%d", parent, i)))[7:]
		j := map[string]any{"id": id, "created": "2024-01-02T03:04:05Z",
			"container_config": map[string]any{"Cmd": []string{"/bin/sh", "-c", fmt.Sprintf("step %d", i+1)}}}
		if parent != "" {
			j["parent"] = parent
		}
		if i == len(layers)-1 {
			j["config"] = map[string]any{"Cmd": []string{"/bin/sh"}}
			j["architecture"], j["os"] = "amd64", "linux"
		}
		jb, _ := json.Marshal(j)
		files = append(files, [2]string{id + "/json", string(jb)}, [2]string{id + "/VERSION", "1.0"}, [2]string{id + "/layer.tar", string(l)})
		parent = id
	}
	repo, tg, _ := strings.Cut(tag, ":")
	r, _ := json.Marshal(map[string]map[string]string{repo: {tg: parent}})
	files = append(files, [2]string{"repositories", string(r)})
	return tarFiles(t, files)
}

// ociLayout writes an OCI layout into dir. mediaType overrides every layer's
// media type (to test mislabelled blobs); nested wraps each image's manifest
// in an index.
func ociLayout(t testing.TB, dir string, mediaType string, nested bool, imgs ...testImage) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) (string, int64) {
		d := digestOf(b)
		if err := os.WriteFile(filepath.Join(blobs, d[7:]), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d, int64(len(b))
	}
	var descs []map[string]any
	for _, im := range imgs {
		cd, cs := put(im.config(t))
		var layers []map[string]any
		for i := range im.layers {
			b := im.blob(t, i)
			mt := "application/vnd.oci.image.layer.v1.tar"
			if i < len(im.comp) && im.comp[i] != "" {
				mt += "+" + im.comp[i]
			}
			if mediaType != "" {
				mt = mediaType
			}
			d, s := put(b)
			layers = append(layers, map[string]any{"mediaType": mt, "digest": d, "size": s})
		}
		mb, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers})
		md, ms := put(mb)
		desc := map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
			"platform": map[string]string{"os": "linux", "architecture": "amd64"}}
		if nested {
			ib, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{desc}})
			id, is := put(ib)
			desc = map[string]any{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": is}
		}
		if len(im.tags) > 0 {
			for _, tg := range im.tags {
				d := map[string]any{}
				for k, v := range desc {
					d[k] = v
				}
				d["annotations"] = map[string]string{annRefName: tg}
				descs = append(descs, d)
			}
		} else {
			descs = append(descs, desc)
		}
	}
	ib, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": descs})
	os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// tarDir packs a directory into a tar (for OCI-archive tests).
func tarDir(t testing.TB, dir string) []byte {
	var files [][2]string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			files = append(files, [2]string{rel, string(b)})
		}
		return nil
	})
	return tarFiles(t, files)
}

func writeTemp(t testing.TB, b []byte) string {
	p := filepath.Join(t.TempDir(), "in.tar")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newStore(t testing.TB) *Store {
	s, err := Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func importOK(t testing.TB, s *Store, p string, o ImportOptions) *ImportResult {
	t.Helper()
	res, err := s.Import(context.Background(), p, o)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	return res
}

// dumpTree lists a tree, one canonical line per entry:
// path type perm uid:gid size nlink [-> link] [rdev] [xattrs].
func dumpTree(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		typ := map[uint32]string{unix.S_IFREG: "f", unix.S_IFDIR: "d", unix.S_IFLNK: "l", unix.S_IFCHR: "c", unix.S_IFBLK: "b", unix.S_IFIFO: "p"}[st.Mode&unix.S_IFMT]
		line := fmt.Sprintf("%s %s %04o %d:%d", rel, typ, st.Mode&0o7777, st.Uid, st.Gid)
		switch typ {
		case "f":
			line += fmt.Sprintf(" size=%d nlink=%d", st.Size, st.Nlink)
		case "l":
			l, _ := os.Readlink(p)
			line += " -> " + l
		case "c", "b":
			line += fmt.Sprintf(" %d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if xs := listXattrs(p); len(xs) > 0 {
			line += " " + strings.Join(xs, ",")
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func listXattrs(p string) []string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s=%q", name, v[:m]))
	}
	sort.Strings(out)
	return out
}

func isRoot() bool { return os.Geteuid() == 0 }

// rawTar builds a tar by hand, for names archive/tar refuses to write: one
// PAX header with the given records, then a regular file with body.
func rawTar(records map[string]string, body string) []byte {
	block := func(name string, typ byte, size int) []byte {
		h := make([]byte, 512)
		copy(h[0:], name)
		copy(h[100:], "0000644\x00")
		copy(h[108:], "0000000\x00")
		copy(h[116:], "0000000\x00")
		copy(h[124:], fmt.Sprintf("%011o\x00", size))
		copy(h[136:], "00000001750\x00")
		h[156] = typ
		copy(h[257:], "ustar\x0000")
		copy(h[148:], "        ")
		sum := 0
		for _, c := range h {
			sum += int(c)
		}
		copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
		return h
	}
	pad := func(b []byte) []byte {
		if r := len(b) % 512; r != 0 {
			b = append(b, make([]byte, 512-r)...)
		}
		return b
	}
	var pax []byte
	keys := make([]string, 0, len(records))
	for k := range records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rec := " " + k + "=" + records[k] + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		pax = append(pax, fmt.Sprintf("%d%s", n, rec)...)
	}
	var out []byte
	out = append(out, block("PaxHeaders/f", 'x', len(pax))...)
	out = append(out, pad(pax)...)
	out = append(out, block("placeholder", '0', len(body))...)
	out = append(out, pad([]byte(body))...)
	out = append(out, make([]byte, 1024)...)
	return out
}
