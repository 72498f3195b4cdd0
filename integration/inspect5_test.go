//go:build integration

package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Issue 5: which, ls, diff, commit, export, layers --efficiency, driven
// through the binary on the busybox fixture (layer plan in
// ../shared/fixtures/README.md) and checked with real tools (skopeo, umoci).

type whichJSON struct {
	Path       string `json:"path"`
	ProvidedBy *struct {
		Index int  `json:"index"`
		Upper bool `json:"upper"`
	} `json:"provided_by"`
	Layers []struct {
		Upper    bool   `json:"upper"`
		Index    int    `json:"index"`
		DiffID   string `json:"diff_id"`
		Status   string `json:"status"`
		Whiteout bool   `json:"whiteout"`
	} `json:"layers"`
}

// whichLine renders a which answer as "4:provides 2:shadowed-whiteout 1:shadowed".
func whichLine(t *testing.T, out string) string {
	t.Helper()
	var w whichJSON
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		t.Fatalf("which --format json: %v\n%s", err, out)
	}
	var parts []string
	for _, l := range w.Layers {
		who := fmt.Sprint(l.Index)
		if l.Upper {
			who = "upper"
		} else if !strings.HasPrefix(l.DiffID, "sha256:") {
			t.Errorf("which %s: layer %d without diff_id", w.Path, l.Index)
		}
		s := l.Status
		if l.Whiteout && s != "whiteout" {
			s += "-whiteout"
		}
		parts = append(parts, who+":"+s)
	}
	return strings.Join(parts, " ")
}

type lsJSON struct {
	Name  string `json:"name"`
	Mode  string `json:"mode"`
	UID   int    `json:"uid"`
	Size  int64  `json:"size"`
	Layer struct {
		Upper bool `json:"upper"`
		Index int  `json:"index"`
	} `json:"layer"`
	Hidden   bool `json:"hidden"`
	Whiteout bool `json:"whiteout"`
}

func lsLines(t *testing.T, out string) []string {
	t.Helper()
	var es []lsJSON
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("ls --format json: %v\n%s", err, out)
	}
	var lines []string
	for _, e := range es {
		who := fmt.Sprint(e.Layer.Index)
		if e.Layer.Upper {
			who = "upper"
		}
		mark := ""
		if e.Hidden {
			mark = " hidden"
		}
		if e.Whiteout {
			mark = " whiteout"
		}
		lines = append(lines, fmt.Sprintf("%s@%s%s", e.Name, who, mark))
	}
	return lines
}

func importBusybox(t *testing.T) string {
	t.Helper()
	fx := fixture(t, "busybox")
	mustStrata(t, "import", filepath.Join(fx, "busybox-oci"), "--tag", "fixture/busybox:latest")
	return fx
}

// TestWhichLsFixture checks which and ls --all on the image alone against
// the fixture's layer plan.
func TestWhichLsFixture(t *testing.T) {
	requireCommands(t, "import", "which", "ls")
	importBusybox(t)
	const img = "fixture/busybox:latest"
	for _, tc := range []struct {
		path, want string
		deleted    bool
	}{
		{"/data/to-modify.txt", "2:provides 1:shadowed", false},                 // modified in layer 2
		{"/data/readd.txt", "4:provides 2:shadowed-whiteout 1:shadowed", false}, // deleted in 2, re-added in 4
		{"/data/hello.txt", "4:provides 1:shadowed", false},                     // chown-only change in 4
		{"/etc/hostname", "4:whiteout 1:shadowed", true},                        // deleted in 4
		{"/data/dir-gone", "2:whiteout 1:shadowed", true},                       // a whole dir deleted in 2
		{"/data/opaque-dir", "4:provides 2:merged,opaque 1:shadowed", false},    // made opaque in 2, merged in 4
		{"/data/file-to-dir", "4:provides,opaque 1:shadowed", false},            // file -> dir in 4
		{"/big/10k/f4242", "4:whiteout 3:shadowed", true},                       // whiteout in the 10k dir
		{"/bin/busybox", "1:provides", false},
	} {
		r := strata(t, "which", "--image", img, tc.path, "--format", "json")
		if (r.Code != 0) != tc.deleted {
			t.Errorf("which %s: exit %d (deleted=%v)\n%v", tc.path, r.Code, tc.deleted, r)
		}
		if got := whichLine(t, r.Stdout); got != tc.want {
			t.Errorf("which %s: %s, want %s", tc.path, got, tc.want)
		}
	}

	got := lsLines(t, mustStrata(t, "ls", img+":/data", "--all", "--format", "json").Stdout)
	for _, w := range []string{
		"dir-gone@2 whiteout", "dir-gone@1 hidden", // whiteout of a dir, and what it hides
		"to-delete.txt@2 whiteout", "to-delete.txt@1 hidden",
		"readd.txt@4", "readd.txt@2 whiteout", "readd.txt@1 hidden",
		"to-modify.txt@2", "to-modify.txt@1 hidden",
		"opaque-dir@4", "opaque-dir@2 hidden", "opaque-dir@1 hidden",
		"hardlink-lower@2", "hardlink-lower@1 hidden", "hardlink-cross@2",
		"file-to-dir@4", "file-to-dir@1 hidden", "link-abs@1",
	} {
		if !slices.Contains(got, w) {
			t.Errorf("ls --all /data lacks %q:\n%s", w, strings.Join(got, "\n"))
		}
	}
	plain := lsLines(t, mustStrata(t, "ls", img+":/data", "--format", "json").Stdout)
	for _, l := range plain {
		if strings.Contains(l, " hidden") || strings.Contains(l, " whiteout") || strings.HasPrefix(l, "dir-gone@") || strings.HasPrefix(l, "to-delete.txt@") {
			t.Errorf("ls without --all shows %q", l)
		}
	}
	// ls of a file, and the table form.
	if got := lsLines(t, mustStrata(t, "ls", img+":/data/hello.txt", "--format", "json").Stdout); strings.Join(got, ",") != "hello.txt@4" {
		t.Errorf("ls of a file: %v", got)
	}
	if out := mustStrata(t, "ls", img+":/etc").Stdout; !strings.Contains(out, " motd") || !strings.Contains(out, " 4/4 ") {
		t.Errorf("ls table:\n%s", out)
	}
}

// changeMount makes the changes through a mount: add, modify and
// delete lower files, delete and recreate a lower dir, rename a lower dir,
// write through one name of a lower hard-link pair.
func changeMount(t *testing.T, mnt string) {
	t.Helper()
	m := func(p string) string { return filepath.Join(mnt, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(m("data/new.txt"), []byte("added through the mount\n"), 0o640))
	must(os.WriteFile(m("data/to-modify.txt"), []byte("v3 (through the mount)\n"), 0o644))
	must(os.Remove(m("data/link-rel")))
	must(os.Remove(m("etc/passwd")))
	must(os.RemoveAll(m("data/opaque-dir")))
	must(os.Mkdir(m("data/opaque-dir"), 0o700))
	must(os.WriteFile(m("data/opaque-dir/fresh"), []byte("fresh\n"), 0o600))
	must(os.Rename(m("special/private-1000"), m("special/moved-private")))
	must(os.Rename(m("names"), m("names-moved"))) // a lower dir with a deep tree
	f, err := os.OpenFile(m("data/hardlink-a"), os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	_, err = f.WriteString("appended\n")
	must(err)
	must(f.Close())
	must(os.MkdirAll(m("usr/local/share/new/deep"), 0o755))
	must(os.WriteFile(m("usr/local/share/new/deep/file"), []byte("deep\n"), 0o644))
	must(os.Chmod(m("tmp"), 0o1770))
}

func TestDiffWhichOnMount(t *testing.T) {
	requireCommands(t, "import", "mount", "which", "diff", "ls")
	importBusybox(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	mount(t, "fixture/busybox:latest", mnt)
	changeMount(t, mnt)
	r := mustStrata(t, "diff", mnt)
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	want := []string{
		"C /data", "A /data/new.txt", "C /data/to-modify.txt", "D /data/link-rel",
		"C /data/opaque-dir", "A /data/opaque-dir/fresh", "D /data/opaque-dir/new2",
		"C /data/hardlink-a", "C /data/hardlink-b", // the other name of the pair shows the write too
		"C /etc", "D /etc/passwd",
		"C /special", "D /special/private-1000", "A /special/moved-private", "A /special/moved-private/secret.txt",
		"D /names", "A /names-moved", "A /names-moved/café",
		"C /usr", "C /usr/local", "A /usr/local/share", "A /usr/local/share/new/deep/file",
		"C /tmp",
	}
	for _, w := range want {
		if !slices.Contains(lines, w) {
			t.Errorf("diff lacks %q", w)
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "C /bin") || l == "C /" || strings.HasPrefix(l, "D /names/") {
			t.Errorf("diff has %q", l)
		}
	}
	if t.Failed() {
		t.Logf("diff:\n%s", r.Stdout)
	}
	var js []struct{ Path, Kind string }
	if err := json.Unmarshal([]byte(mustStrata(t, "diff", mnt, "--format", "json").Stdout), &js); err != nil || len(js) != len(lines) {
		t.Errorf("diff --format json: %v (%d entries, %d lines)", err, len(js), len(lines))
	}
	// which through the mount: the upper provides what was written.
	if got := whichLine(t, mustStrata(t, "which", filepath.Join(mnt, "data/to-modify.txt"), "--format", "json").Stdout); got != "upper:provides 2:shadowed 1:shadowed" {
		t.Errorf("which on the mount: %s", got)
	}
	if got := whichLine(t, mustStrata(t, "which", filepath.Join(mnt, "data/hello.txt"), "--format", "json").Stdout); got != "4:provides 1:shadowed" {
		t.Errorf("which of an untouched file on the mount: %s", got)
	}
	if got := lsLines(t, mustStrata(t, "ls", filepath.Join(mnt, "data/opaque-dir"), "--all", "--format", "json").Stdout); strings.Join(got, ",") != "fresh@upper" {
		t.Errorf("ls --all of a recreated dir: %v", got)
	}
	// The xattr the mount serves agrees.
	if out, err := runErr(10*time.Second, "getfattr", "--absolute-names", "--only-values", "-n", "user.strata.layer", filepath.Join(mnt, "data/hello.txt")); err == nil && !strings.HasPrefix(out, "layer 4/4 ") {
		t.Errorf("user.strata.layer: %q", out)
	}
}

// TestCommitExportRoundTrip: commit a changed mount, export it both ways,
// have skopeo and umoci read the exports, and compare the unpacked rootfs
// with the tree the mount showed; importing an export gives the same ID.
func TestCommitExportRoundTrip(t *testing.T) {
	requireCommands(t, "import", "mount", "commit", "export", "diff")
	for _, tool := range []string{"skopeo", "umoci"} {
		if _, err := runErr(5*time.Second, "which", tool); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh installs it)", tool)
		}
	}
	importBusybox(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	mount(t, "fixture/busybox:latest", mnt)
	changeMount(t, mnt)
	want := treeManifest(t, mnt)

	start := time.Now()
	r := mustStrata(t, "commit", mnt, "fixture/committed:v1", "--message", "round trip", "--author", "strata tests")
	id := strings.TrimSpace(r.Stdout)
	if !strings.HasPrefix(id, "sha256:") || len(id) != 71 {
		t.Fatalf("commit printed %q", id)
	}
	t.Logf("commit: %v", time.Since(start))
	in := inspect(t, "fixture/committed:v1")
	if in.ID != id || len(in.DiffIDs) != 5 {
		t.Fatalf("committed image %s with %d layers", in.ID, len(in.DiffIDs))
	}
	var doc struct {
		Config struct {
			Author  string
			History []struct {
				CreatedBy string `json:"created_by"`
				Comment   string
				Author    string
			}
		}
	}
	json.Unmarshal([]byte(in.Raw), &doc)
	if h := doc.Config.History; len(h) == 0 || h[len(h)-1].Comment != "round trip" || h[len(h)-1].Author != "strata tests" ||
		h[len(h)-1].CreatedBy != "strata commit" || doc.Config.Author != "strata tests" {
		t.Errorf("history entry missing from the config:\n%s", in.Raw)
	}
	// The mount goes on: same tree, same diff.
	sameTree(t, "mount after commit", want, treeManifest(t, mnt))

	dir := t.TempDir()
	dockerTar, ociTar := filepath.Join(dir, "docker.tar"), filepath.Join(dir, "oci.tar")
	start = time.Now()
	mustStrata(t, "export", "fixture/committed:v1", dockerTar)
	t.Logf("export docker: %v", time.Since(start))
	mustStrata(t, "export", "fixture/committed:v1", ociTar, "--format", "oci")

	out := run(t, 2*time.Minute, "skopeo", "inspect", "docker-archive:"+dockerTar)
	var si struct{ Layers []string }
	if err := json.Unmarshal([]byte(out), &si); err != nil || len(si.Layers) != 5 || si.Layers[4] != in.DiffIDs[4] {
		t.Errorf("skopeo inspect: %v %v\n%s", err, si.Layers, out)
	}
	// docker-archive -> OCI layout by skopeo -> rootfs by umoci.
	layoutDir := filepath.Join(dir, "layout")
	run(t, 5*time.Minute, "skopeo", "copy", "docker-archive:"+dockerTar, "oci:"+layoutDir+":v1")
	bundle := filepath.Join(dir, "bundle")
	run(t, 5*time.Minute, "umoci", "unpack", "--image", layoutDir+":v1", bundle)
	sameTree(t, "umoci unpack of skopeo copy of the docker export vs the mount", want, treeManifest(t, filepath.Join(bundle, "rootfs")))
	// The OCI export, unpacked as it is.
	ociDir := filepath.Join(dir, "ocidir")
	os.MkdirAll(ociDir, 0o755)
	run(t, 2*time.Minute, "tar", "-xf", ociTar, "-C", ociDir)
	bundle2 := filepath.Join(dir, "bundle2")
	run(t, 5*time.Minute, "umoci", "unpack", "--image", ociDir+":v1", bundle2)
	sameTree(t, "umoci unpack of the OCI export vs the mount", want, treeManifest(t, filepath.Join(bundle2, "rootfs")))

	// Imported again, into another store: the same image ID.
	other := filepath.Join(t.TempDir(), "other")
	for _, f := range []string{dockerTar, ociTar} {
		r := strataIn(t, other, defaultTimeout, "import", f)
		if r.Code != 0 || !strings.Contains(r.Stdout+r.Stderr, id) {
			t.Errorf("import of %s did not give %s:\n%v", filepath.Base(f), id, r)
		}
	}
	r = strataIn(t, other, defaultTimeout, "inspect", "fixture/committed:v1")
	if r.Code != 0 || parseInspect(t, r.Stdout).ID != id {
		t.Errorf("re-imported tag: %v", r)
	}

	// Export to stdout is the same stream.
	r = mustStrata(t, "export", "fixture/committed:v1", "-", "--format", "oci")
	if b, _ := os.ReadFile(ociTar); !bytes.Equal(b, []byte(r.Stdout)) {
		t.Errorf("export to stdout differs from export to a file (%d vs %d bytes)", len(r.Stdout), len(b))
	}

	// --reset: the mount point now shows the new image with an empty upper.
	r = mustStrata(t, "commit", mnt, "fixture/committed:v2", "--reset")
	if !isMounted(mnt) {
		t.Fatalf("%s not mounted after commit --reset\n%v", mnt, r)
	}
	if d := strings.TrimSpace(mustStrata(t, "diff", mnt).Stdout); d != "" {
		t.Errorf("diff after --reset:\n%s", d)
	}
	sameTree(t, "mount after commit --reset", want, treeManifest(t, mnt))
	if ms := mustStrata(t, "mounts", "--format", "json").Stdout; !strings.Contains(ms, strings.TrimPrefix(inspect(t, "fixture/committed:v2").ID, "sha256:")) {
		t.Errorf("mount record does not name the new image:\n%s", ms)
	}
}

// efficiencyArchive builds a docker archive wasting known bytes:
// layer 1 adds big (1 MB) and small (1000 bytes), layer 2 overwrites big
// with 10 bytes, layer 3 deletes small.
func efficiencyArchive(t *testing.T) string {
	layer := func(files map[string]int) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			size := files[n]
			tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), ModTime: time.Unix(1e9, 0)})
			tw.Write(bytes.Repeat([]byte{'x'}, size))
		}
		tw.Close()
		return buf.Bytes()
	}
	layers := [][]byte{layer(map[string]int{"big": 1_000_000, "small": 1000}), layer(map[string]int{"big": 10}), layer(map[string]int{".wh.small": 0})}
	var diffIDs, names []string
	var files []struct {
		name string
		body []byte
	}
	for _, l := range layers {
		d := sha256hex(l)
		diffIDs = append(diffIDs, "sha256:"+d)
		names = append(names, d+".tar")
		files = append(files, struct {
			name string
			body []byte
		}{d + ".tar", l})
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history": []map[string]string{{"created_by": "add"}, {"created_by": "overwrite"}, {"created_by": "delete"}}})
	cname := sha256hex(cfg) + ".json"
	man, _ := json.Marshal([]map[string]any{{"Config": cname, "RepoTags": []string{"wasteful:1"}, "Layers": names}})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(n string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	for _, f := range files {
		add(f.name, f.body)
	}
	add(cname, cfg)
	add("manifest.json", man)
	tw.Close()
	p := filepath.Join(t.TempDir(), "wasteful.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLayersEfficiency: the numbers on an image built to waste known bytes,
// and the CI gate's exit code.
func TestLayersEfficiency(t *testing.T) {
	requireCommands(t, "import", "layers")
	mustStrata(t, "import", efficiencyArchive(t))
	var e struct {
		Layers []struct {
			Added, Wasted int64
		}
		Wasted          int64   `json:"wasted"`
		Score           float64 `json:"score"`
		DiveWastedBytes int64   `json:"dive_wasted_bytes"`
	}
	out := mustStrata(t, "layers", "wasteful:1", "--efficiency", "--format", "json").Stdout
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Exactly wasted: big's 1 000 000 and small's 1000 bytes of layer 1.
	if len(e.Layers) != 3 || e.Layers[0].Wasted != 1_001_000 || e.Layers[1].Wasted != 0 || e.Wasted != 1_001_000 {
		t.Errorf("wasted: %s", out)
	}
	// dive: /big min 10 of 1 000 010, /small min 0 of 1000 -> 10/1 001 010.
	if want := 10.0 / 1_001_010.0; e.Score < want*0.999999 || e.Score > want*1.000001 || e.DiveWastedBytes != 1_001_010 {
		t.Errorf("score %v (want %v), dive wasted %d", e.Score, want, e.DiveWastedBytes)
	}
	if r := strata(t, "layers", "wasteful:1", "--efficiency", "--ci", "--lowest-efficiency", "0.9"); r.Code != 1 || !strings.Contains(r.Stdout, "FAIL") {
		t.Errorf("--ci below the threshold: %v", r)
	}
	if r := strata(t, "layers", "wasteful:1", "--efficiency", "--ci", "--lowest-efficiency", "0.000001"); r.Code != 0 || !strings.Contains(r.Stdout, "PASS") {
		t.Errorf("--ci above the threshold: %v", r)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
