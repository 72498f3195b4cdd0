package layerstore

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkExtract extracts a synthetic layer (2000 small files in 20
// directories and one 16 MiB file), plain and gzip, reporting MB/s of
// uncompressed tar.
func BenchmarkExtract(b *testing.B) {
	var ents []ent
	for d := 0; d < 20; d++ {
		ents = append(ents, dir(fmt.Sprintf("d%02d", d), 0o755))
		for f := 0; f < 100; f++ {
			ents = append(ents, file(fmt.Sprintf("d%02d/f%03d", d, f), fmt.Sprintf("content %d %d\n", d, f), 0o644))
		}
	}
	big := make([]byte, 16<<20)
	for i := range big {
		big[i] = byte(i * 7 / 5)
	}
	ents = append(ents, file("big", string(big), 0o644))
	layer := mkTar(b, ents...)
	for _, tc := range []struct {
		name string
		blob []byte
	}{{"plain", layer}, {"gzip", gzipBytes(b, layer)}, {"zstd", zstdBytes(b, layer)}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(layer)))
			for i := 0; i < b.N; i++ {
				dest := b.TempDir()
				src := &layerSource{name: "bench", diffID: digestOf(layer), size: -1, set: bytesSet(tc.blob)}
				if _, err := extractLayer(context.Background(), src, dest, extractOptions{root0: isRoot(), maxRatio: 1000, floor: 1 << 30}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
