// Package hostile is a corpus of crafted image archives that try to break
// the importer: path traversal, link loops, lying headers, broken
// compression, decompression bombs, digest mismatches, bad metadata and bad
// tags. Each case builds its archive in Go (no binary blobs) and says what
// must happen: refused with an error that wraps a layerstore sentinel and
// names the problem, or accepted with an exact tree for the layer it
// carries. The layerstore unit test (hostile_test.go) runs every case
// through Store.Import, the integration test TestReliabilityHostileImport
// through `strata import`.
package hostile

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/strata-fs/strata/layerstore"
)

// Case is one hostile archive and its expected outcome.
type Case struct {
	Name string
	// Build writes the archive (a file or a directory) into dir and
	// returns its path. canary is a directory outside the store that the
	// archive aims at; the caller checks it is untouched.
	Build func(dir, canary string) (string, error)
	// Args are extra `strata import` flags (ImportArgs for Store.Import).
	Args []string

	// Refused: the error wraps Err and contains Msg.
	Err error
	Msg string

	// Accepted: Ref names the image; Tree is the Listing of its top
	// layer's diff directory as a privileged (root) import makes it.
	Ref  string
	Tree []string
}

// Refused reports whether the case must fail.
func (c Case) Refused() bool { return c.Err != nil }

// ImportArgs turns Args into the equivalent options: --tag and --max-ratio.
func (c Case) ImportArgs() (tag string, maxRatio int64) {
	for i := 0; i+1 < len(c.Args); i += 2 {
		switch c.Args[i] {
		case "--tag":
			tag = c.Args[i+1]
		case "--max-ratio":
			fmt.Sscan(c.Args[i+1], &maxRatio)
		}
	}
	return
}

// good is the bottom layer of every wrapped case: one harmless file.
var good, _ = mkTar(reg("good", "fine\n", 0o644))

// GoodImage writes a valid docker archive (tag hostile/base:1) whose bottom
// layer every wrapped case shares: the store a test prepares before
// running the corpus.
func GoodImage(dir string) (string, error) {
	top, err := mkTar(dir_("etc", 0o755), reg("etc/hostname", "base\n", 0o644))
	if err != nil {
		return "", err
	}
	return writeTar(dir, "base.tar", docker([]image{{layers: [][]byte{good, top}, tags: []string{"hostile/base:1"}, label: "base"}}, nil))
}

func dir_(name string, mode int64) entry { return dir(name, mode) }

// wrapped puts a hostile layer on top of the good one in an otherwise valid
// docker archive tagged hostile/NAME:1.
func wrapped(name string, layer func(canary string) ([]entry, error)) func(dir, canary string) (string, error) {
	return func(d, canary string) (string, error) {
		ents, err := layer(canary)
		if err != nil {
			return "", err
		}
		l, err := mkTar(ents...)
		if err != nil {
			return "", err
		}
		return writeTar(d, name+".tar", docker([]image{{layers: [][]byte{good, l}, tags: []string{"hostile/" + name + ":1"}, label: name}}, nil))
	}
}

func static(ents ...entry) func(string) ([]entry, error) {
	return func(string) ([]entry, error) { return ents, nil }
}

// refused is a wrapped layer that must be refused.
func refusedLayer(name string, err error, msg string, layer func(canary string) ([]entry, error)) Case {
	return Case{Name: name, Build: wrapped(name, layer), Err: err, Msg: msg}
}

// acceptedLayer is a wrapped layer that must be imported with this tree.
func acceptedLayer(name string, tree []string, layer func(canary string) ([]entry, error)) Case {
	return Case{Name: name, Build: wrapped(name, layer), Ref: "hostile/" + name + ":1", Tree: tree}
}

// upTo climbs from a layer's diff directory to / and down to p: a relative
// symlink target that leaves the store whatever its depth.
func upTo(p string) string { return strings.Repeat("../", 40) + strings.TrimPrefix(p, "/") }

func hsh(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:16]
}

// fileLine is the Listing line of a root-owned regular file.
func fileLine(p, body string, mode, nlink int) string {
	return fmt.Sprintf("%s f %04o 0:0 size=%d sha256=%s nlink=%d", p, mode, len(body), hsh(body), nlink)
}

const rootLine = ". d 0755 0:0"

// Cases returns the corpus, in a stable order.
func Cases() []Case {
	var cs []Case
	cs = append(cs, traversal()...)
	cs = append(cs, links()...)
	cs = append(cs, whiteouts()...)
	cs = append(cs, policy()...)
	cs = append(cs, headers()...)
	cs = append(cs, compression()...)
	cs = append(cs, metadata()...)
	return cs
}

func traversal() []Case {
	U := layerstore.ErrUnsafePath
	return []Case{
		refusedLayer("dotdot", U, "climbs out of the layer", static(reg("../planted", "x", 0o644))),
		refusedLayer("dotdot-nested", U, "climbs out of the layer", static(dir("a", 0o755), reg("a/../../planted", "x", 0o644))),
		refusedLayer("absolute-dotdot", U, "climbs out of the layer", static(reg("/../../../planted", "x", 0o644))),
		refusedLayer("absolute-to-canary", U, "climbs out of the layer", func(c string) ([]entry, error) {
			return []entry{reg("../../../../../../../../../../../.."+c+"/planted", "x", 0o644)}, nil
		}),
		// A leading "/" is dropped, as tar -x and docker do: the file lands inside the layer.
		acceptedLayer("absolute-path", []string{rootLine, "etc d 0755 0:0", "etc/cron.d d 0755 0:0",
			fileLine("etc/cron.d/planted", "x", 0o644, 1)}, static(reg("/etc/cron.d/planted", "x", 0o644))),
		refusedLayer("symlink-parent-absolute", U, "a parent directory is a symlink", func(c string) ([]entry, error) {
			return []entry{symlink("a", c), reg("a/planted", "x", 0o644)}, nil
		}),
		refusedLayer("symlink-parent-relative", U, "a parent directory is a symlink", func(c string) ([]entry, error) {
			return []entry{symlink("a", upTo(c)), reg("a/planted", "x", 0o644)}, nil
		}),
		refusedLayer("symlink-parent-inside", U, "a parent directory is a symlink", static(dir("b", 0o755), symlink("a", "b"), reg("a/x", "x", 0o644))),
		refusedLayer("symlink-parent-mkdir", U, "a parent directory is a symlink", func(c string) ([]entry, error) {
			return []entry{symlink("a", c), dir("a/sub", 0o755)}, nil
		}),
		refusedLayer("symlink-replaces-dir", U, "a parent directory is a symlink", func(c string) ([]entry, error) {
			return []entry{dir("d", 0o755), reg("d/a", "a", 0o644), symlink("d", c), reg("d/planted", "x", 0o644)}, nil
		}),
		refusedLayer("symlink-deep-parent", U, "a parent directory is a symlink", func(c string) ([]entry, error) {
			return []entry{dir("a", 0o755), dir("a/b", 0o755), symlink("a/b/c", c), reg("a/b/c/d/planted", "x", 0o644)}, nil
		}),
		refusedLayer("long-name-over-path-max", U, "exceeds PATH_MAX", static(entry{hdr: tar.Header{Name: strings.Repeat("d/", 2100) + "f",
			Typeflag: tar.TypeReg, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}})),
		refusedLayer("component-over-name-max", U, "component longer than NAME_MAX", static(reg(strings.Repeat("n", 300), "x", 0o644))),
	}
}

func links() []Case {
	U := layerstore.ErrUnsafePath
	return []Case{
		refusedLayer("hardlink-dotdot", U, "climbs out of the layer", static(hardlink("h", "../../../../../../etc/passwd"))),
		refusedLayer("hardlink-absolute-host-file", U, `hard link target "/etc/passwd" is not in the layer`, static(hardlink("h", "/etc/passwd"))),
		refusedLayer("hardlink-to-canary", U, "is not in the layer", func(c string) ([]entry, error) {
			return []entry{hardlink("h", c+"/secret")}, nil
		}),
		refusedLayer("hardlink-through-symlink", U, "is not in the layer", func(c string) ([]entry, error) {
			return []entry{symlink("s", c), hardlink("h", "s/secret")}, nil
		}),
		refusedLayer("hardlink-forward", U, `hard link target "later" is not (yet) in the layer`, static(hardlink("h", "later"), reg("later", "x", 0o644))),
		refusedLayer("hardlink-loop", U, "is not (yet) in the layer", static(hardlink("h1", "h2"), hardlink("h2", "h1"))),
		refusedLayer("hardlink-self-missing", U, "is not (yet) in the layer", static(hardlink("h", "h"))),
		refusedLayer("hardlink-to-dir", U, "hard link to directory", static(dir("d", 0o755), hardlink("h", "d"))),
		refusedLayer("hardlink-to-root", U, "hard link to the layer root", static(hardlink("h", "./"))),
		acceptedLayer("hardlink-earlier", []string{rootLine, fileLine("f", "data", 0o640, 2), fileLine("h", "data", 0o640, 2)},
			static(reg("f", "data", 0o640), hardlink("h", "f"))),
		// A later entry named like a hard link replaces the link; it never writes through it.
		acceptedLayer("hardlink-then-overwritten", []string{rootLine, fileLine("f", "original", 0o644, 1), fileLine("h", "replacement", 0o600, 1)},
			static(reg("f", "original", 0o644), hardlink("h", "f"), reg("h", "replacement", 0o600))),
		// Symlink loops and symlinks that point out are only data in a layer.
		acceptedLayer("symlink-loops", []string{rootLine, "a l 0777 0:0 -> b", "b l 0777 0:0 -> a", "etc l 0777 0:0 -> /etc",
			"self l 0777 0:0 -> self", "up l 0777 0:0 -> ../../../../../.."},
			static(symlink("self", "self"), symlink("a", "b"), symlink("b", "a"), symlink("up", "../../../../../.."), symlink("etc", "/etc"))),
		refusedLayer("symlink-loop-written-through", U, "a parent directory is a symlink", static(symlink("a", "b"), symlink("b", "a"), reg("a/x", "x", 0o644))),
		// A file entry over a symlink to the canary replaces the symlink.
		acceptedLayer("file-replaces-symlink-to-outside", []string{rootLine, fileLine("evil", "not through", 0o644, 1)},
			func(c string) ([]entry, error) {
				return []entry{symlink("evil", c+"/secret"), reg("evil", "not through", 0o644)}, nil
			}),
		acceptedLayer("dir-replaces-symlink-to-outside", []string{rootLine, "x d 0700 0:0", fileLine("x/inside", "in", 0o644, 1)},
			func(c string) ([]entry, error) {
				return []entry{dir("x", 0o755), reg("x/old", "o", 0o644), symlink("x", c), dir("x", 0o700), reg("x/inside", "in", 0o644)}, nil
			}),
	}
}

func whiteouts() []Case {
	U := layerstore.ErrUnsafePath
	return []Case{
		refusedLayer("whiteout-dotdot", U, "bad whiteout name", static(dir("d", 0o755), reg("d/.wh..", "", 0))),
		refusedLayer("whiteout-dot", U, "bad whiteout name", static(reg(".wh..", "", 0), reg("d/.wh..", "", 0))),
		refusedLayer("whiteout-empty", U, "bad whiteout name", static(reg("d/.wh.", "", 0))),
		refusedLayer("whiteout-outside", U, "climbs out of the layer", static(reg("../.wh.etc", "", 0))),
		refusedLayer("whiteout-through-symlink", U, "a parent directory is a symlink", func(c string) ([]entry, error) {
			return []entry{symlink("s", c), reg("s/.wh.secret", "", 0)}, nil
		}),
		refusedLayer("opaque-through-symlink", U, "a parent directory is a symlink", func(c string) ([]entry, error) {
			return []entry{symlink("s", c), reg("s/.wh..wh..opq", "", 0)}, nil
		}),
		refusedLayer("whiteout-used-as-directory", U, "whiteout marker used as a directory", static(reg("d/.wh.x/y", "x", 0o644))),
		refusedLayer("opaque-marker-with-children", U, "whiteout marker used as a directory", static(dir("d", 0o755), dir("d/.wh..wh..opq", 0o755), reg("d/.wh..wh..opq/x", "x", 0o644))),
		acceptedLayer("whiteout-of-lower-file", []string{rootLine, "good c 0000 0:0 0,0"}, static(reg(".wh.good", "", 0))),
		acceptedLayer("opaque-at-layer-root", []string{`. d 0755 0:0 trusted.overlay.opaque="y"`}, static(reg(".wh..wh..opq", "", 0))),
		acceptedLayer("opaque-marker-as-directory", []string{rootLine, `d d 0750 0:0 trusted.overlay.opaque="y"`},
			static(dir("d", 0o750), dir("d/.wh..wh..opq", 0o755))),
		acceptedLayer("opaque-before-its-directory", []string{rootLine, `d d 0711 0:0 trusted.overlay.opaque="y"`, fileLine("d/f", "f", 0o644, 1)},
			static(reg("d/.wh..wh..opq", "", 0), dir("d", 0o711), reg("d/f", "f", 0o644))),
		// AUFS metadata (.wh..wh.plnk, .wh..wh.aufs) and everything under it is skipped, as docker does.
		acceptedLayer("aufs-metadata", []string{rootLine, fileLine("kept", "k", 0o644, 1)},
			static(dir(".wh..wh.plnk", 0o700), reg(".wh..wh.plnk/1.2", "hidden", 0o644), reg(".wh..wh.aufs", "", 0), reg("kept", "k", 0o644))),
		// A whiteout device already in overlay form is kept as it is.
		acceptedLayer("overlay-form-whiteout", []string{rootLine, "gone c 0000 0:0 0,0"}, static(device("gone", tar.TypeChar, 0, 0, 0))),
		acceptedLayer("whiteout-then-recreated", []string{rootLine, fileLine("good", "again", 0o644, 1)},
			static(reg(".wh.good", "", 0), reg("good", "again", 0o644))),
	}
}

// policy: as root the store keeps device nodes, fifos, setuid/setgid and
// sticky bits and owners exactly (layerstore/doc.go "Layer format"); mounts
// made for browsing are nosuid,nodev, which is where they are defused.
func policy() []Case {
	return []Case{
		acceptedLayer("device-nodes", []string{rootLine, "dev d 0755 0:0", "dev/fifo p 0600 0:0", "dev/null c 0666 0:0 1,3", "dev/sda b 0660 0:6 8,0"},
			static(dir("dev", 0o755), device("dev/null", tar.TypeChar, 1, 3, 0o666),
				entry{hdr: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o660, Gid: 6, ModTime: epoch}},
				device("dev/fifo", tar.TypeFifo, 0, 0, 0o600))),
		acceptedLayer("setuid-setgid-sticky", []string{rootLine, "bin d 0755 0:0", fileLine("bin/su", "#!su", 0o4755, 1),
			"bin/wall f 2755 0:5 size=5 sha256=" + hsh("#wall") + " nlink=1", "shared d 2775 0:0", "tmp d 1777 0:0"},
			static(dir("bin", 0o755), reg("bin/su", "#!su", 0o4755),
				entry{hdr: tar.Header{Name: "bin/wall", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 5, Size: 5, ModTime: epoch}, body: []byte("#wall")},
				dir("tmp", 0o1777), dir("shared", 0o2775))),
		acceptedLayer("file-then-dir", []string{rootLine, "x d 0755 0:0", fileLine("x/y", "y", 0o644, 1)},
			static(reg("x", "file", 0o644), dir("x", 0o755), reg("x/y", "y", 0o644))),
		acceptedLayer("dir-then-file", []string{rootLine, fileLine("x", "now a file", 0o644, 1)},
			static(dir("x", 0o755), reg("x/y", "y", 0o644), reg("x", "now a file", 0o644))),
		acceptedLayer("file-then-symlink-then-fifo", []string{rootLine, "x p 0644 0:0"},
			static(reg("x", "file", 0o644), symlink("x", "/etc/passwd"), device("x", tar.TypeFifo, 0, 0, 0o644))),
		acceptedLayer("duplicate-file", []string{rootLine, fileLine("dup", "second", 0o600, 1)},
			static(reg("dup", "first", 0o644), reg("dup", "second", 0o600))),
		acceptedLayer("overlay-xattrs-dropped", []string{rootLine, `f f 0644 0:0 size=0 sha256=` + hsh("") + ` nlink=1 user.ok="1"`},
			static(entry{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: epoch, PAXRecords: map[string]string{
				"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.trusted.overlay.redirect": "/etc",
				"SCHILY.xattr.user.overlay.origin": "x", "SCHILY.xattr.user.ok": "1"}}})),
	}
}

// sparseHeader is an old-GNU sparse header ('S'): the map in the header,
// realsize, and the data bytes that follow.
func sparseHeader(name string, realSize int64, frags [][2]int64, data []byte) []byte {
	h := rawHeader(name, tar.TypeGNUSparse, int64(len(data)), func(h []byte) {
		copy(h[257:265], "ustar  \x00")
		for i, f := range frags {
			copy(h[386+24*i:], fmt.Sprintf("%011o\x00", f[0]))
			copy(h[386+24*i+12:], fmt.Sprintf("%011o\x00", f[1]))
		}
		copy(h[483:], fmt.Sprintf("%011o\x00", realSize))
	})
	return append(h, pad512(append([]byte(nil), data...))...)
}

// paxEntry is a PAX extended header with these records (written by hand:
// archive/tar refuses to write oversized ones), then an empty file.
func paxEntry(name string, records map[string]string) []byte {
	var pax []byte
	for k, v := range records {
		rec := " " + k + "=" + v + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		pax = append(pax, fmt.Sprintf("%d%s", n, rec)...)
	}
	out := append(rawHeader("PaxHeaders/"+name, tar.TypeXHeader, int64(len(pax)), nil), pad512(pax)...)
	return append(out, rawHeader(name, tar.TypeReg, 0, nil)...)
}

// longLink is a GNU long-name entry ('L') for name, then an empty file.
func longLink(name string) []byte {
	b := append([]byte(name), 0)
	out := append(rawHeader("././@LongLink", tar.TypeGNULongName, int64(len(b)), func(h []byte) { copy(h[257:265], "ustar  \x00") }), pad512(b)...)
	return append(out, rawHeader("short", tar.TypeReg, 0, func(h []byte) { copy(h[257:265], "ustar  \x00") })...)
}

func headers() []Case {
	I, T := layerstore.ErrInvalidImage, layerstore.ErrTruncated
	big := strings.Repeat("h", 2<<20)
	aaa := strings.Repeat("A", 512)
	sparseBody := strings.Repeat("\x00", 4096) + aaa + strings.Repeat("\x00", 8192-4096-512)
	return []Case{
		refusedLayer("huge-pax-header", I, "header field too long", static(raw(paxEntry("f", map[string]string{"comment": big})))),
		refusedLayer("huge-gnu-long-name", I, "header field too long", static(raw(longLink(strings.Repeat("n/", 1<<20)+"f")))),
		refusedLayer("negative-size", I, "invalid tar header", static(raw(rawHeader("neg", tar.TypeReg, 0, func(h []byte) {
			for i := 124; i < 136; i++ {
				h[i] = 0xff
			}
		})))),
		refusedLayer("size-beyond-end", T, "truncated", static(raw(append(rawHeader("big", tar.TypeReg, 1<<20, nil), make([]byte, 512)...)))),
		refusedLayer("bad-header-checksum", I, "invalid tar header", static(raw(func() []byte {
			h := rawHeader("f", tar.TypeReg, 0, nil)
			h[0] = 'g' // after the checksum
			return h
		}()))),
		refusedLayer("sparse-map-beyond-size", I, "invalid tar header", static(raw(sparseHeader("s", 4096, [][2]int64{{8192, 512}}, []byte(aaa))))),
		refusedLayer("sparse-map-overlapping", I, "invalid tar header", static(raw(sparseHeader("s", 4096, [][2]int64{{0, 512}, {256, 512}}, []byte(aaa+aaa))))),
		refusedLayer("sparse-map-more-data-than-stored", I, "sparse file references non-existent data",
			static(raw(sparseHeader("s", 8192, [][2]int64{{0, 1024}}, []byte(aaa))), reg("after", "x", 0o644))),
		refusedLayer("sparse-map-less-data-than-stored", I, "sparse file contains unreferenced data",
			static(raw(sparseHeader("s", 8192, [][2]int64{{0, 512}}, []byte(aaa+aaa))), reg("after", "x", 0o644))),
		acceptedLayer("sparse-valid", []string{rootLine, "s f 0644 0:0 size=8192 sha256=" + hsh(sparseBody) + " nlink=1"},
			static(raw(sparseHeader("s", 8192, [][2]int64{{4096, 512}}, []byte(aaa))))),
	}
}

// zeroTar streams n zero bytes: a "tar" whose first two blocks end it, so
// nothing is extracted while the decompressor keeps producing.
func zeroStream(n int64, w io.Writer) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// bomb is an image whose layer is comp(n zero bytes), with the right diff_id.
func bomb(name, comp string, n int64, args ...string) Case {
	return Case{Name: name, Args: args, Err: layerstore.ErrDecompressionBomb, Msg: "decompression ratio exceeds limit",
		Build: func(d, _ string) (string, error) {
			var blob bytes.Buffer
			var w io.WriteCloser
			if comp == "gzip" {
				w, _ = gzip.NewWriterLevel(&blob, gzip.BestCompression)
			} else {
				zw, err := zstd.NewWriter(&blob, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
				if err != nil {
					return "", err
				}
				w = zw
			}
			h := sha256.New()
			if err := zeroStream(n, io.MultiWriter(w, h)); err != nil {
				return "", err
			}
			if err := w.Close(); err != nil {
				return "", err
			}
			im := image{layers: [][]byte{good, nil}, blobs: [][]byte{nil, blob.Bytes()},
				diffIDs: []string{"sha256:" + sha(good), "sha256:" + hex.EncodeToString(h.Sum(nil))}, tags: []string{"hostile/" + name + ":1"}, label: name}
			return writeTar(d, name+".tar", docker([]image{im}, nil))
		}}
}

// blobCase wraps a layer stored as blob(layer) in a docker archive.
func blobCase(name string, err error, msg string, blob func(layer []byte) []byte) Case {
	return Case{Name: name, Err: err, Msg: msg, Build: func(d, _ string) (string, error) {
		l, e := mkTar(reg("a", strings.Repeat("abcdefgh", 8192), 0o644), reg("b", strings.Repeat("12345678", 8192), 0o644))
		if e != nil {
			return "", e
		}
		im := image{layers: [][]byte{good, l}, blobs: [][]byte{nil, blob(l)}, tags: []string{"hostile/" + name + ":1"}, label: name}
		return writeTar(d, name+".tar", docker([]image{im}, nil))
	}}
}

// outerCase compresses a whole valid archive and then damages it.
func outerCase(name string, err error, msg string, damage func(archive []byte) []byte) Case {
	return Case{Name: name, Err: err, Msg: msg, Build: func(d, _ string) (string, error) {
		l, e := mkTar(reg("a", strings.Repeat("abcdefgh", 8192), 0o644))
		if e != nil {
			return "", e
		}
		b, e := tarOf(docker([]image{{layers: [][]byte{good, l}, tags: []string{"hostile/" + name + ":1"}, label: name}}, nil))
		if e != nil {
			return "", e
		}
		return writeFile(d, name+".tar", damage(b))
	}}
}

func flip(b []byte, at int) []byte {
	b = append([]byte(nil), b...)
	b[at] ^= 0x5a
	return b
}

func compression() []Case {
	I, T, D := layerstore.ErrInvalidImage, layerstore.ErrTruncated, layerstore.ErrDigestMismatch
	return []Case{
		blobCase("gzip-truncated", T, "truncated", func(l []byte) []byte { g := gzipBytes(l); return g[:len(g)/2] }),
		blobCase("gzip-corrupt-middle", I, "corrupt gzip stream", func(l []byte) []byte { g := gzipBytes(l); return flip(g, len(g)/2) }),
		blobCase("gzip-bad-crc", I, "gzip: invalid checksum", func(l []byte) []byte { g := gzipBytes(l); return flip(g, len(g)-6) }),
		blobCase("gzip-bad-header", I, "gzip: invalid header", func(l []byte) []byte { g := gzipBytes(l); g = flip(g, 2); return g }),
		blobCase("zstd-truncated", T, "truncated", func(l []byte) []byte { z := zstdBytes(l); return z[:len(z)/2] }),
		blobCase("zstd-corrupt-middle", I, "corrupt zstd stream", func(l []byte) []byte { z := zstdBytes(l); return flip(z, len(z)/2) }),
		blobCase("zstd-bad-checksum", I, "corrupt zstd stream", func(l []byte) []byte { z := zstdBytes(l); return flip(z, len(z)-2) }),
		blobCase("plain-layer-bytes-changed", D, "uncompressed content is", func(l []byte) []byte { return flip(l, 600) }),
		bomb("gzip-bomb", "gzip", 300<<20, "--max-ratio", "100"),
		bomb("zstd-bomb", "zstd", 300<<20),
		outerCase("archive-gzip-truncated", T, "truncated", func(b []byte) []byte { g := gzipBytes(b); return g[:len(g)*2/3] }),
		outerCase("archive-zstd-corrupt", I, "corrupt zstd stream", func(b []byte) []byte { z := zstdBytes(b); return flip(z, len(z)/2) }),
		outerCase("archive-tar-truncated", T, "truncated", func(b []byte) []byte { return b[:len(b)-3000] }),
	}
}

// imgCase builds an image archive from files made by mk.
func imgCase(name string, err error, msg string, mk func() ([]file, bool)) Case {
	return Case{Name: name, Err: err, Msg: msg, Build: func(d, _ string) (string, error) {
		files, asDir := mk()
		if asDir {
			return writeDir(d, name, files)
		}
		return writeTar(d, name+".tar", files)
	}}
}

func one(name string) image {
	l, _ := mkTar(reg("f", "content "+name, 0o644))
	return image{layers: [][]byte{good, l}, tags: []string{"hostile/" + name + ":1"}, label: name}
}

func metadata() []Case {
	I, D, R, F := layerstore.ErrInvalidImage, layerstore.ErrDigestMismatch, layerstore.ErrInvalidReference, layerstore.ErrUnknownFormat
	var cs []Case
	add := func(c Case) { cs = append(cs, c) }
	tagged := func(name string, tags ...string) func() ([]file, bool) {
		return func() ([]file, bool) { im := one(name); im.tags = tags; return docker([]image{im}, nil), false }
	}
	add(imgCase("diffid-mismatch", D, "uncompressed content is", func() ([]file, bool) {
		im := one("diffid-mismatch")
		im.diffIDs = []string{"sha256:" + sha(good), "sha256:" + sha([]byte("something else"))}
		return docker([]image{im}, nil), false
	}))
	add(imgCase("docker-config-name-mismatch", D, "name says", func() ([]file, bool) {
		fs := docker([]image{one("docker-config-name-mismatch")}, nil)
		for i := range fs {
			if strings.HasSuffix(fs[i].name, ".json") && fs[i].name != "manifest.json" {
				fs[i].data = append(fs[i].data, ' ')
			}
		}
		return fs, false
	}))
	lying := func(kind string) func(string, []byte) []byte {
		return func(k string, b []byte) []byte {
			if k == kind {
				return append(append([]byte(nil), b...), ' ')
			}
			return b
		}
	}
	missing := func(kind string) func(string, []byte) []byte {
		return func(k string, b []byte) []byte {
			if k == kind {
				return nil
			}
			return b
		}
	}
	add(imgCase("oci-manifest-digest-mismatch", D, "digest mismatch: content is", func() ([]file, bool) {
		return oci([]image{one("oci-manifest-digest-mismatch")}, ociOpts{blob: lying("manifest")}), true
	}))
	add(imgCase("oci-config-digest-mismatch", D, "digest mismatch: content is", func() ([]file, bool) {
		return oci([]image{one("oci-config-digest-mismatch")}, ociOpts{blob: lying("config")}), true
	}))
	add(imgCase("oci-layer-digest-mismatch", D, "manifest says", func() ([]file, bool) {
		return oci([]image{one("oci-layer-digest-mismatch")}, ociOpts{blob: func(k string, b []byte) []byte {
			if k == "layer" && !bytes.Equal(b, good) {
				return flip(b, 600)
			}
			return b
		}}), false
	}))
	add(imgCase("oci-layer-size-mismatch", D, "manifest says", func() ([]file, bool) {
		return oci([]image{one("oci-layer-size-mismatch")}, ociOpts{editManifest: func(m map[string]any) {
			ls := m["layers"].([]any)
			ls[1].(map[string]any)["size"] = 10
		}}), false
	}))
	add(imgCase("docker-missing-layer", I, "does not exist", func() ([]file, bool) {
		return docker([]image{one("docker-missing-layer")}, func(m []map[string]any) {
			ls := m[0]["Layers"].([]string)
			ls[1] = strings.Repeat("0", 64) + ".tar"
		}), false
	}))
	add(imgCase("docker-layer-path-escapes", I, "does not exist", func() ([]file, bool) {
		return docker([]image{one("docker-layer-path-escapes")}, func(m []map[string]any) {
			ls := m[0]["Layers"].([]string)
			ls[1] = "../../../../etc/passwd"
		}), false
	}))
	add(imgCase("oci-missing-layer-blob", I, "no such file", func() ([]file, bool) {
		return oci([]image{one("oci-missing-layer-blob")}, ociOpts{blob: func(k string, b []byte) []byte {
			if k == "layer" && !bytes.Equal(b, good) {
				return nil
			}
			return b
		}}), true
	}))
	add(imgCase("oci-missing-config-blob", I, "does not exist", func() ([]file, bool) {
		return oci([]image{one("oci-missing-config-blob")}, ociOpts{blob: missing("config")}), false
	}))
	add(imgCase("oci-missing-manifest-blob", I, "does not exist", func() ([]file, bool) {
		return oci([]image{one("oci-missing-manifest-blob")}, ociOpts{blob: missing("manifest")}), false
	}))
	add(imgCase("oci-index-nested-too-deep", I, "nested deeper than", func() ([]file, bool) {
		return oci([]image{one("oci-index-nested-too-deep")}, ociOpts{wrap: 12}), false
	}))
	notJSON := []byte("{\"architecture\": \"amd64\", \"rootfs\": ")
	add(imgCase("docker-config-not-json", I, "config", func() ([]file, bool) {
		im := one("docker-config-not-json")
		im.config = notJSON
		return docker([]image{im}, nil), false
	}))
	add(imgCase("oci-config-not-json", I, "config", func() ([]file, bool) {
		im := one("oci-config-not-json")
		im.config = []byte("<config>not json</config>")
		return oci([]image{im}, ociOpts{}), false
	}))
	add(imgCase("manifest-json-not-json", I, "manifest.json", func() ([]file, bool) {
		fs := docker([]image{one("manifest-json-not-json")}, nil)
		fs[len(fs)-1].data = []byte("[{\"Config\": 42")
		return fs, false
	}))
	add(imgCase("index-json-not-json", I, "index.json", func() ([]file, bool) {
		fs := oci([]image{one("index-json-not-json")}, ociOpts{})
		for i := range fs {
			if fs[i].name == "index.json" {
				fs[i].data = []byte("\x00\x01garbage")
			}
		}
		return fs, false
	}))
	add(imgCase("layer-count-mismatch", I, "layers but the config lists", func() ([]file, bool) {
		im := one("layer-count-mismatch")
		im.diffIDs = []string{"sha256:" + sha(good)}
		return docker([]image{im}, nil), false
	}))
	add(imgCase("archive-symlink-loop", I, "too many links", func() ([]file, bool) {
		fs := docker([]image{one("archive-symlink-loop")}, func(m []map[string]any) {
			ls := m[0]["Layers"].([]string)
			ls[1] = "loop/a"
		})
		return append(fs, file{name: "loop/a", link: "b"}, file{name: "loop/b", link: "a"}), false
	}))
	add(imgCase("directory-layer-symlink-outside", I, "escapes", func() ([]file, bool) {
		fs := docker([]image{one("directory-layer-symlink-outside")}, func(m []map[string]any) {
			ls := m[0]["Layers"].([]string)
			ls[1] = "escape.tar"
		})
		return append(fs, file{name: "escape.tar", link: "/etc/passwd"}), true
	}))
	add(imgCase("legacy-parent-loop", I, "parent chain loops", func() ([]file, bool) {
		a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
		ja, _ := json.Marshal(map[string]string{"id": a, "parent": b})
		jb, _ := json.Marshal(map[string]string{"id": b, "parent": a})
		rp, _ := json.Marshal(map[string]map[string]string{"hostile/legacy": {"1": a}})
		return []file{{name: a + "/json", data: ja}, {name: a + "/layer.tar", data: good}, {name: b + "/json", data: jb},
			{name: b + "/layer.tar", data: good}, {name: "repositories", data: rp}}, false
	}))
	add(imgCase("legacy-id-traversal", I, "is not 64 hex", func() ([]file, bool) {
		rp, _ := json.Marshal(map[string]map[string]string{"hostile/legacy": {"1": "../../../../etc"}})
		return []file{{name: "repositories", data: rp}}, false
	}))
	add(imgCase("not-an-image", F, "no index.json, manifest.json or repositories", func() ([]file, bool) {
		return []file{{name: "README", data: []byte("hello")}}, false
	}))
	add(Case{Name: "not-a-tar", Err: F, Msg: "unknown image format", Build: func(d, _ string) (string, error) {
		return writeFile(d, "not-a-tar.tar", bytes.Repeat([]byte("this is not a tar archive\n"), 100))
	}})
	long := strings.Repeat("t", 200)
	add(imgCase("tag-with-colon", R, `"hostile/x:a:b"`, tagged("tag-with-colon", "hostile/x:a:b")))
	add(imgCase("tag-200-chars", R, "tag must match", tagged("tag-200-chars", "hostile/long:"+long)))
	add(imgCase("oci-ref-name-200-chars", R, "tag must match", func() ([]file, bool) {
		im := one("oci-ref-name-200-chars")
		im.tags = []string{"hostile/long:" + long}
		return oci([]image{im}, ociOpts{}), false
	}))
	cli := func(name, tag string, msg string) Case {
		c := imgCase(name, R, msg, tagged(name))
		c.Args = []string{"--tag", tag}
		return c
	}
	add(cli("cli-tag-with-colon", "hostile/x:a:b", "could not parse reference"))
	add(cli("cli-tag-200-chars", "hostile/x:"+long, "tag must match"))
	add(cli("cli-tag-with-digest", "hostile/x@sha256:"+strings.Repeat("0", 64), "a tag cannot carry a digest"))
	return cs
}
