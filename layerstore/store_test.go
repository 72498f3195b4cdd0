package layerstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"busybox:latest", "docker.io/library/busybox:latest"},
		{"docker.io/library/busybox:latest", "docker.io/library/busybox:latest"},
		{"index.docker.io/library/busybox", "docker.io/library/busybox:latest"},
		{"fusefixture/busybox", "docker.io/fusefixture/busybox:latest"},
		{"localhost/fusefixture/busybox:l1", "localhost/fusefixture/busybox:l1"},
		{"example.com:5000/a/b:V_1.2-x", "example.com:5000/a/b:V_1.2-x"},
		{"busybox@sha256:" + fmt.Sprintf("%064x", 1), "docker.io/library/busybox@sha256:" + fmt.Sprintf("%064x", 1)},
	} {
		got, err := parseRef(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("parseRef(%q) = %q, %v; want %q", tc.in, got.String(), err, tc.want)
		}
	}
	for _, bad := range []string{"", "Busybox", "a:-x", "a:.x", "a:" + string(make([]byte, 129)), "a b", "a:b:c:", "busybox@sha256:12"} {
		if _, err := parseRef(bad); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("parseRef(%q) = %v, want ErrInvalidReference", bad, err)
		}
	}
	for _, tc := range []struct {
		tag string
		ok  bool
	}{{"latest", true}, {"_x", true}, {"A.b-c_9", true}, {".x", false}, {"-x", false}, {"a:b", false}, {string(make([]byte, 129)), false}} {
		if ValidTag(tc.tag) != tc.ok {
			t.Errorf("ValidTag(%q) != %v", tc.tag, tc.ok)
		}
	}
	if FamiliarRef("docker.io/library/busybox:latest") != "busybox:latest" || FamiliarRef("docker.io/foo/bar:1") != "foo/bar:1" || FamiliarRef("localhost/x:1") != "localhost/x:1" {
		t.Error("FamiliarRef")
	}
}

// twoImages imports two images whose IDs share the first hex digit.
func twoImages(t *testing.T, s *Store) (a, b testImage) {
	layers := baseLayers(t)
	a = testImage{layers: layers, tags: []string{"busybox:latest"}, label: "a"}
	for i := 0; ; i++ {
		b = testImage{layers: layers, tags: []string{"other:1"}, label: fmt.Sprint("b", i)}
		if b.id(t)[0] == a.id(t)[0] {
			break
		}
	}
	importOK(t, s, writeTemp(t, dockerArchive(t, false, a, b)), ImportOptions{})
	return a, b
}

func TestResolve(t *testing.T) {
	s := newStore(t)
	a, b := twoImages(t, s)
	ida, idb := a.id(t), b.id(t)
	common := 0
	for ida[common] == idb[common] {
		common++
	}
	for _, tc := range []struct {
		ref  string
		want string
		err  error
	}{
		{"busybox", ida, nil},
		{"busybox:latest", ida, nil},
		{"docker.io/library/busybox:latest", ida, nil},
		{"other:1", idb, nil},
		{"other", "", ErrNotFound},
		{ida, ida, nil},
		{ida[:common+1], ida, nil},
		{"sha256:" + ida[:common+1], ida, nil},
		{"sha256:" + ida, ida, nil},
		{ida[:common], "", ErrAmbiguous},
		{"busybox@sha256:" + ida, ida, nil},
		{"other@sha256:" + ida, "", ErrNotFound},
		{"nothing:here", "", ErrNotFound},
		{"Bad/Name", "", ErrInvalidReference},
		{"sha256:xyz", "", ErrInvalidReference},
	} {
		img, err := s.Resolve(tc.ref)
		switch {
		case tc.err != nil && !errors.Is(err, tc.err):
			t.Errorf("Resolve(%q) error %v, want %v", tc.ref, err, tc.err)
		case tc.err == nil && (err != nil || img.ID != tc.want):
			t.Errorf("Resolve(%q) = %v, %v; want %s", tc.ref, img, err, tc.want)
		}
	}
	imgs, err := s.Images()
	if err != nil || len(imgs) != 2 {
		t.Fatalf("Images = %d, %v", len(imgs), err)
	}
}

func TestTagRemoveGC(t *testing.T) {
	s := newStore(t)
	a, b := twoImages(t, s)
	if err := s.Tag("busybox", "mine:v2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("busybox", "mine:bad:tag"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("bad tag: %v", err)
	}
	if err := s.Tag("nothing", "mine:v3"); !errors.Is(err, ErrNotFound) {
		t.Errorf("tag of missing: %v", err)
	}
	img, _ := s.Resolve("mine:v2")
	if !slices.Equal(img.RepoTags, []string{"busybox:latest", "mine:v2"}) {
		t.Errorf("tags %v", img.RepoTags)
	}
	// Untag one name: the image stays.
	res, err := s.Remove("busybox")
	if err != nil || res.Deleted != "" || !slices.Equal(res.Untagged, []string{"busybox:latest"}) {
		t.Fatalf("Remove = %+v, %v", res, err)
	}
	// Refused while mounted.
	mi := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(mi, []byte("36 35 0:40 / /mnt/a\\040b rw,nosuid - fuse.strata strata rw\n37 35 0:41 / /mnt/other rw - fuse.strata strata rw\n"), 0o644)
	defer func(old string) { mountinfoPath = old }(mountinfoPath)
	mountinfoPath = mi
	s.AddMount(MountRecord{Mountpoint: "/mnt/a b", ImageID: a.id(t), PID: os.Getpid()})
	s.AddMount(MountRecord{Mountpoint: "/mnt/gone", ImageID: b.id(t), PID: os.Getpid()}) // not mounted: dropped
	s.AddMount(MountRecord{Mountpoint: "/mnt/other", ImageID: b.id(t), PID: 1 << 22})    // dead pid: dropped
	if _, err := s.Remove("mine:v2"); !errors.Is(err, ErrInUse) {
		t.Errorf("Remove of mounted image: %v", err)
	}
	ms, err := s.Mounts()
	if err != nil || len(ms) != 1 || ms[0].Mountpoint != "/mnt/a b" {
		t.Errorf("Mounts = %+v, %v", ms, err)
	}
	if err := s.RemoveMount("/mnt/a b"); err != nil {
		t.Fatal(err)
	}
	res, err = s.Remove("mine:v2")
	if err != nil || res.Deleted != a.id(t) {
		t.Fatalf("Remove last tag = %+v, %v", res, err)
	}
	if _, err := s.Resolve(a.id(t)); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted image still resolves: %v", err)
	}
	// Layers are shared with b: gc removes nothing.
	g, err := s.GC()
	if err != nil || len(g.Layers) != 0 {
		t.Errorf("GC = %+v, %v", g, err)
	}
	// Removing by ID removes every tag.
	if err := s.Tag("other:1", "other:2"); err != nil {
		t.Fatal(err)
	}
	res, err = s.Remove(b.id(t)[:12])
	if err != nil || res.Deleted != b.id(t) || len(res.Untagged) != 2 {
		t.Fatalf("Remove by ID = %+v, %v", res, err)
	}
	// While an import or pull runs (it holds a staging lock, and commits
	// its layers before its image), gc keeps unused layers.
	st, err := s.newStaging("import")
	if err != nil {
		t.Fatal(err)
	}
	g, err = s.GC()
	if err != nil || len(g.Layers) != 0 || g.KeptBusy != 2 {
		t.Errorf("GC during an import = %+v, %v; want 2 layers kept", g, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	g, err = s.GC()
	if err != nil || len(g.Layers) != 2 || g.KeptBusy != 0 {
		t.Errorf("GC = %+v, %v", g, err)
	}
	for _, d := range []string{"layers/sha256", "images", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(s.Root(), d)); len(ents) != 0 {
			t.Errorf("%s not empty after rmi+gc", d)
		}
	}
}

func TestStaleStagingCleaned(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, "tmp")
	// A dead import: dir + unlocked lock file; a dir without lock file.
	os.MkdirAll(filepath.Join(tmp, "import-dead", "layer-0", "diff", "ro"), 0o755)
	os.WriteFile(filepath.Join(tmp, "import-dead.lock"), nil, 0o600)
	os.MkdirAll(filepath.Join(tmp, "import-nolock"), 0o755)
	// A live import: its lock is held.
	live, err := s.newStaging("import")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(tmp)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{filepath.Base(live.dir), filepath.Base(live.dir) + ".lock"}
	if !slices.Equal(names, want) {
		t.Errorf("tmp after Open: %v, want %v", names, want)
	}
	live.Close()
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("tmp after Close: %d entries", len(ents))
	}
}

func TestContainerDirs(t *testing.T) {
	s := newStore(t)
	up, wk, err := s.ContainerDirs("c1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{up, wk} {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("%s: %v", d, err)
		}
	}
	for _, bad := range []string{"", "..", "a/b", "x\x00"} {
		if _, _, err := s.ContainerDirs(bad); err == nil {
			t.Errorf("ContainerDirs(%q) accepted", bad)
		}
	}
}

// TestConcurrentImports runs imports of overlapping images at once: each
// layer ends up stored once and every image is complete.
func TestConcurrentImports(t *testing.T) {
	s := newStore(t)
	layers := baseLayers(t)
	var paths []string
	for i := 0; i < 4; i++ {
		im := testImage{layers: append(slices.Clone(layers), mkTar(t, file(fmt.Sprint("own", i), "x", 0o644))), tags: []string{fmt.Sprintf("c%d:1", i)}, label: fmt.Sprint(i)}
		paths = append(paths, writeTemp(t, dockerArchive(t, false, im)))
	}
	errs := make(chan error, len(paths))
	for _, p := range paths {
		go func() {
			_, err := s.Import(context.Background(), p, ImportOptions{Parallel: 2})
			errs <- err
		}()
	}
	for range paths {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.Root(), "layers", "sha256"))
	if len(ents) != 6 {
		t.Errorf("%d layers stored, want 6", len(ents))
	}
	for i := range paths {
		img, err := s.Resolve(fmt.Sprintf("c%d:1", i))
		if err != nil || len(img.Layers) != 3 {
			t.Errorf("c%d: %v", i, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), "tmp")); len(ents) != 0 {
		t.Errorf("tmp not empty")
	}
}

// A daemon ending after its store was deleted removes its record without
// bringing the store back.
func TestRemoveMountInLeavesNoStore(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddMount(MountRecord{Mountpoint: "/mnt/x", ImageID: "x", PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	if err := RemoveMountIn(root, "/mnt/x/"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "mounts")); len(ents) != 0 {
		t.Errorf("the record is still there: %v", ents)
	}
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if err := RemoveMountIn(root, "/mnt/x"); err != nil {
		t.Errorf("RemoveMountIn on a deleted store: %v", err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deleted store is back: %v", err)
	}
}
