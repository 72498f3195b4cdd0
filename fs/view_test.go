package fs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Node-level tests: the View resolves without mounting.
func TestViewWhichAndList(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for whiteout devices")
	}
	base := t.TempDir()
	var lowers []string
	for _, n := range []string{"top", "mid", "bottom"} {
		l := filepath.Join(base, n)
		os.MkdirAll(filepath.Join(l, "d"), 0o755)
		lowers = append(lowers, l)
	}
	os.WriteFile(filepath.Join(lowers[2], "d", "f"), []byte("bottom"), 0o644)
	os.WriteFile(filepath.Join(lowers[1], "d", "f"), []byte("mid!"), 0o644)
	os.WriteFile(filepath.Join(lowers[2], "d", "gone"), []byte("x"), 0o644)
	unix.Mknod(filepath.Join(lowers[0], "d", "gone"), unix.S_IFCHR, 0)
	os.WriteFile(filepath.Join(lowers[0], "d", "new"), []byte("n"), 0o644)
	v, err := NewView(Config{Lowers: lowers, LayerInfo: []string{"L3", "L2", "L1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	hits, err := v.Which("d/f")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hits {
		got = append(got, h.Desc+"="+h.Kind)
	}
	if s := strings.Join(got, " "); s != "L2=provides L1=shadowed" {
		t.Errorf("which d/f: %s", s)
	}
	hits, _ = v.Which("d/gone")
	got = nil
	for _, h := range hits {
		got = append(got, h.Desc+"="+h.Kind)
	}
	if s := strings.Join(got, " "); s != "L3=whiteout L1=shadowed" {
		t.Errorf("which d/gone: %s", s)
	}
	hits, _ = v.Which("d")
	if len(hits) != 3 || hits[0].Kind != "provides" || hits[2].Kind != "merged" {
		t.Errorf("which d: %+v", hits)
	}
	ents, err := v.List("d", false)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, e := range ents {
		got = append(got, e.Name+"@"+e.Desc)
	}
	if s := strings.Join(got, " "); s != "f@L2 new@L3" {
		t.Errorf("list d: %s", s)
	}
	ents, _ = v.List("d", true)
	got = nil
	for _, e := range ents {
		m := ""
		if e.Hidden {
			m = "(hidden)"
		}
		if e.Whiteout {
			m = "(whiteout)"
		}
		got = append(got, e.Name+"@"+e.Desc+m)
	}
	if s := strings.Join(got, " "); s != "f@L2 f@L1(hidden) gone@L3(whiteout) gone@L1(hidden) new@L3" {
		t.Errorf("list --all d: %s", s)
	}
}
