package layerstore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// extractForTest extracts one layer tar into a fresh store layer directory
// and returns the store and the layer's diffID.
func extractForTest(t *testing.T, layer []byte) (*Store, string) {
	t.Helper()
	s := newStore(t)
	diffID := digestOf(layer)
	dest := s.layerPath(diffID)
	if err := os.MkdirAll(dest, 0o700); err != nil {
		t.Fatal(err)
	}
	src := &layerSource{name: "test", diffID: diffID, size: -1, set: bytesSet(layer)}
	if _, err := extractLayer(context.Background(), src, dest, extractOptions{root0: isRoot(), warn: t.Logf}); err != nil {
		t.Fatalf("extract: %v", err)
	}
	return s, diffID
}

func reassemble(t *testing.T, s *Store, diffID string) ([]byte, error) {
	t.Helper()
	rc, err := s.openLayerTar(diffID)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestTarSplitRoundTrip: a layer is given back byte for byte from its
// extracted tree plus the recorded headers, whatever the tar's dialect.
func TestTarSplitRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB, crosses segment chunks
	mt := time.Unix(1700000000, 123456789)
	long := strings.Repeat("d", 120) + "/" + strings.Repeat("f", 130)
	cases := []struct {
		name  string
		layer func(t *testing.T) []byte
	}{
		{"ustar basic", func(t *testing.T) []byte {
			return mkTar(t, dir("etc", 0o755), file("etc/passwd", "root:x:0:0\n", 0o644),
				symlink("etc/link", "passwd"), hardlink("etc/hard", "etc/passwd"), file("empty", "", 0o600))
		}},
		{"pax xattrs, ns mtime, long names, whiteouts", func(t *testing.T) []byte {
			x := ent{tar.Header{Name: "x.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, ModTime: mt, Format: tar.FormatPAX,
				PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v\x00\xff"}}, "abc"}
			l := ent{tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o644, Size: 4, ModTime: mt, Format: tar.FormatPAX}, "long"}
			wh := ent{tar.Header{Name: "gone/.wh.f", Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}, ""}
			opq := ent{tar.Header{Name: "o/.wh..wh..opq", Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}, ""}
			return mkTar(t, dir("o", 0o755), opq, x, l, dir("gone", 0o755), wh, file("big", string(big), 0o644))
		}},
		{"gnu format, trailing padding", func(t *testing.T) []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range []ent{dir("a", 0o755), file("a/"+strings.Repeat("n", 150), "gnu long name", 0o644), file("a/b", "b", 0o600)} {
				h := e.hdr
				h.Format = tar.FormatGNU
				tw.WriteHeader(&h)
				tw.Write([]byte(e.body))
			}
			tw.Close()
			// GNU tar pads to a 10 KiB record.
			b := buf.Bytes()
			return append(b, make([]byte, 10240-len(b)%10240)...)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			layer := tc.layer(t)
			s, diffID := extractForTest(t, layer)
			got, err := reassemble(t, s, diffID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, layer) {
				t.Fatalf("reassembled %d bytes (%s), original %d bytes (%s)", len(got), digestOf(got), len(layer), diffID)
			}
		})
	}
}

// A file replaced by a later entry of the same name cannot be given back:
// reassembly fails on its checksum instead of producing other bytes.
func TestTarSplitDuplicateFails(t *testing.T) {
	layer := mkTar(t, file("a", "first", 0o644), file("a", "second", 0o644))
	s, diffID := extractForTest(t, layer)
	if _, err := reassemble(t, s, diffID); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("want a checksum failure, got %v", err)
	}
}

func TestTarSplitMissing(t *testing.T) {
	layer := mkTar(t, file("a", "x", 0o644))
	s, diffID := extractForTest(t, layer)
	os.Remove(filepath.Join(s.layerPath(diffID), tarSplitFile))
	if _, err := s.openLayerTar(diffID); !errors.Is(err, ErrNoTarSplit) {
		t.Fatalf("want ErrNoTarSplit, got %v", err)
	}
}
