package layerstore

import (
	"errors"
	"path"
	"strings"
	"testing"
)

// FuzzDecodeWhiteout checks the whiteout/opaque/AUFS decoding of layer
// entry names (decodeWhiteout) on every name cleanName lets through: it
// never panics, refuses only with ErrUnsafePath, and what it decides
// always stays beside the marker: a whiteout hides exactly the sibling it
// names, an opaque marker marks exactly its own directory, nothing climbs.
func FuzzDecodeWhiteout(f *testing.F) {
	for _, s := range []string{".wh.foo", "a/b/.wh.c", "a/.wh..wh..opq", ".wh..wh..opq", ".wh..wh.plnk/123.456", ".wh..wh.aufs",
		"a/.wh..wh..opq/x", "a/.wh.b/c", ".wh..", ".wh.", ".wh...", "../.wh.x", "/.wh.x", "a/./.wh.b", "a//.wh.b", "plain/file",
		".wh.a/.wh..wh..opq", "x/.wh..wh..wh..opq", "\x00.wh.", ".wh.\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, err := cleanName(raw)
		if err != nil || name == "" {
			return // refused, or the layer root: apply never decodes these
		}
		kind, target, err := decodeWhiteout(name)
		comps := strings.Split(name, "/")
		base := comps[len(comps)-1]
		dir := path.Dir(name)
		if dir == "." {
			dir = ""
		}
		marker := false
		for _, c := range comps {
			marker = marker || strings.HasPrefix(c, ".wh.")
		}
		if err != nil {
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("decodeWhiteout(%q): %v, want ErrUnsafePath", name, err)
			}
			if !marker {
				t.Fatalf("decodeWhiteout(%q) refused a name without a .wh. component: %v", name, err)
			}
			return
		}
		switch kind {
		case notWhiteout:
			if marker {
				t.Fatalf("decodeWhiteout(%q): ordinary entry, but a component is a .wh. marker", name)
			}
		case whiteoutFile:
			hidden := strings.TrimPrefix(base, ".wh.")
			if !strings.HasPrefix(base, ".wh.") || strings.HasPrefix(base, ".wh..wh.") || hidden == "" || hidden == "." || hidden == ".." {
				t.Fatalf("decodeWhiteout(%q): whiteout of %q", name, target)
			}
			if target != path.Join(dir, hidden) || path.Clean(target) != target || strings.HasPrefix(target, "/") || target == ".." || strings.HasPrefix(target, "../") {
				t.Fatalf("decodeWhiteout(%q): hides %q, want the sibling %q", name, target, path.Join(dir, hidden))
			}
			for _, c := range comps[:len(comps)-1] {
				if strings.HasPrefix(c, ".wh.") {
					t.Fatalf("decodeWhiteout(%q): whiteout under a marker directory accepted", name)
				}
			}
		case opaqueMarker:
			if base != ".wh..wh..opq" || target != dir {
				t.Fatalf("decodeWhiteout(%q): opaque %q, want %q", name, target, dir)
			}
		case aufsMeta:
			found := false
			for _, c := range comps {
				found = found || (strings.HasPrefix(c, ".wh..wh.") && c != ".wh..wh..opq")
			}
			if !found {
				t.Fatalf("decodeWhiteout(%q): AUFS metadata without a .wh..wh. component", name)
			}
		default:
			t.Fatalf("decodeWhiteout(%q): kind %d", name, kind)
		}
	})
}

// FuzzParseRef checks the image reference parser: it never panics, refuses
// only with ErrInvalidReference, and what it accepts is normalised for
// good: the full form and the familiar form parse back to the same
// reference, tags follow the tag rule and digests are sha256.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"busybox", "busybox:latest", "docker.io/library/busybox:1.36", "library/busybox", "foo/bar:baz",
		"localhost:5000/a/b:c", "localhost/x", "registry.example.com:443/ns/img@sha256:" + strings.Repeat("a", 64),
		"x@sha256:" + strings.Repeat("0", 63), "a:b:c", "A:b", "x:" + strings.Repeat("t", 200), "index.docker.io/foo", "docker.io/foo",
		"UPPER/case", "a//b", "a/b/", ":tag", "@sha256:", "x:-bad", "x:_ok", "x:.", "1.2.3.4:5/y", "[::1]:5000/z:t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRef(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Fatalf("parseRef(%q): %v, want ErrInvalidReference", s, err)
			}
			return
		}
		if r.Repo == "" || (r.Tag == "") == (r.Digest == "") {
			t.Fatalf("parseRef(%q) = %+v: want a repo and exactly one of tag, digest", s, r)
		}
		if r.Tag != "" && !ValidTag(r.Tag) {
			t.Fatalf("parseRef(%q): tag %q breaks the tag rule", s, r.Tag)
		}
		if r.Digest != "" && !digestRe().MatchString(r.Digest) {
			t.Fatalf("parseRef(%q): digest %q", s, r.Digest)
		}
		for _, form := range []string{r.String(), FamiliarRef(r.String())} {
			r2, err := parseRef(form)
			if err != nil || r2 != r {
				t.Fatalf("parseRef(%q) = %+v, but its form %q parses to %+v, %v", s, r, form, r2, err)
			}
		}
		if got := refRepo(r.String()); got != r.Repo {
			t.Fatalf("refRepo(%q) = %q, want %q", r.String(), got, r.Repo)
		}
	})
}
