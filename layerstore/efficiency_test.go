package layerstore

import (
	"archive/tar"
	"math"
	"strings"
	"testing"
	"time"
)

func whiteoutEnt(p string) ent {
	return ent{hdr: tar.Header{Name: p, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}}
}

// TestEfficiency: an image built to waste known bytes.
//
//	layer 1: /a 1000, /b 2000, /d/x 300, /d/y 400, /keep 50, /hl 70 (+ hard link /hl2)
//	layer 2: /a 1500 (overwrites), .wh.b, /d opaque + /d/z 10, .wh.hl (its link /hl2 survives)
//	layer 3: .wh.d
//
// Exactly: layer 1 wastes a, b, d/x, d/y = 3700 (hl lives on as hl2);
// layer 2 wastes d/z = 10. dive: leaf paths /a (1000+1500, min 1000),
// /b (2000 + whiteout 0), /d/x 300, /d/y 400, /keep 50, /hl (70 + 0),
// /hl2 0, /d/z 10, /d (whiteout of a dir dive stacked without honouring
// the opaque marker: 300+400+10 = 710): min sum 2470, cumulative sum 6040.
func TestEfficiency(t *testing.T) {
	l1 := mkTar(t, file("a", strings.Repeat("a", 1000), 0o644), file("b", strings.Repeat("b", 2000), 0o644),
		dir("d", 0o755), file("d/x", strings.Repeat("x", 300), 0o644), file("d/y", strings.Repeat("y", 400), 0o644),
		file("keep", strings.Repeat("k", 50), 0o644), file("hl", strings.Repeat("h", 70), 0o644), hardlink("hl2", "hl"))
	l2 := mkTar(t, file("a", strings.Repeat("A", 1500), 0o644), whiteoutEnt(".wh.b"), dir("d", 0o755),
		whiteoutEnt("d/.wh..wh..opq"), file("d/z", strings.Repeat("z", 10), 0o644), whiteoutEnt(".wh.hl"))
	l3 := mkTar(t, whiteoutEnt(".wh.d"))
	s := newStore(t)
	res := importOK(t, s, writeTemp(t, dockerArchive(t, false, testImage{layers: [][]byte{l1, l2, l3}, label: "eff"})), ImportOptions{})
	e, err := s.Efficiency(res.Images[0])
	if err != nil {
		t.Fatal(err)
	}
	wantAdded := []int64{3820, 1510, 0}
	wantWasted := []int64{3700, 10, 0}
	for i, l := range e.Layers {
		if l.Added != wantAdded[i] || l.Wasted != wantWasted[i] {
			t.Errorf("layer %d: added %d wasted %d, want %d %d", i+1, l.Added, l.Wasted, wantAdded[i], wantWasted[i])
		}
	}
	if e.Wasted != 3710 || e.Added != 5330 {
		t.Errorf("totals: added %d wasted %d", e.Added, e.Wasted)
	}
	if want := 2470.0 / 6040.0; math.Abs(e.Score-want) > 1e-12 {
		t.Errorf("score %v, want %v", e.Score, want)
	}
	// dive's wasted bytes: /a 2500 + /b 2000 + /hl 70.
	if e.DiveWastedBytes != 4570 {
		t.Errorf("dive wasted %d, want 4570 (%+v)", e.DiveWastedBytes, e.Inefficient)
	}
	if len(e.Inefficient) != 3 || e.Inefficient[0].Path != "/a" || e.Inefficient[0].CumulativeSize != 2500 {
		t.Errorf("inefficient: %+v", e.Inefficient)
	}
	if math.Abs(e.DiveWastedUserPercent-4570.0/1510.0) > 1e-12 {
		t.Errorf("user percent %v", e.DiveWastedUserPercent)
	}
}

// A layer without contents.jsonl is walked instead, with the same result.
func TestEfficiencyWalkFallback(t *testing.T) {
	l1 := mkTar(t, file("a", strings.Repeat("a", 100), 0o644), dir("d", 0o755), file("d/x", "xx", 0o644))
	l2 := mkTar(t, file("a", strings.Repeat("A", 10), 0o644), dir("d", 0o755), whiteoutEnt("d/.wh..wh..opq"))
	s := newStore(t)
	img := importOK(t, s, writeTemp(t, dockerArchive(t, false, testImage{layers: [][]byte{l1, l2}, label: "walk"})), ImportOptions{}).Images[0]
	want, err := s.Efficiency(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range img.Layers {
		if err := removeAll(s.layerPath(l.DiffID) + "/contents.jsonl"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Efficiency(img)
	if err != nil {
		t.Fatal(err)
	}
	if got.Score != want.Score || got.Wasted != want.Wasted || got.Wasted != 102 {
		t.Errorf("walked: score %v wasted %d; from contents: score %v wasted %d", got.Score, got.Wasted, want.Score, want.Wasted)
	}
}
