//go:build integration

package integration

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
// started per test with ../shared/fixtures/registry.sh in a temp dir (its
// own port), images pushed to it with skopeo, pulled with strata and
// compared with a `strata import` of the same image; strata's pushes are
// copied back with skopeo. Faults come from killing the registry by its PID
// and from a small proxy in this process that corrupts or slows blobs.

// testReg is one running docker-registry.
type testReg struct {
	dir  string
	addr string // 127.0.0.1:PORT
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func registryScript(t testing.TB) string {
	t.Helper()
	if sharedDir == "" {
		t.Skip("../shared/fixtures/registry.sh not found (set STRATA_SHARED)")
	}
	return filepath.Join(sharedDir, "fixtures", "registry.sh")
}

// startRegistry runs registry.sh start in a temp dir on a free port; the
// cleanup stops it (registry.sh kills exactly the PID it recorded).
func startRegistry(t testing.TB) *testReg {
	t.Helper()
	requireCommands(t, "pull", "push")
	r := &testReg{dir: filepath.Join(t.TempDir(), "registry")}
	r.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	r.start(t)
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *testReg) script(t testing.TB, verb string) (string, error) {
	cmd := exec.Command("bash", registryScript(t), verb, r.dir)
	cmd.Env = append(os.Environ(), "REGISTRY_PORT="+r.addr[strings.LastIndex(r.addr, ":")+1:])
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *testReg) start(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := r.script(t, "start"); err != nil {
		t.Fatalf("registry.sh start: %v\n%s", err, out)
	}
}

func (r *testReg) stop(t testing.TB) {
	t.Helper()
	if out, err := r.script(t, "stop"); err != nil {
		t.Errorf("registry.sh stop: %v\n%s", err, out)
	}
}

// kill9 kills the registry process (the PID registry.sh recorded) at once.
func (r *testReg) kill9(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "registry.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("registry.pid: %q", b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// skopeoPush copies an OCI layout to the registry.
func skopeoPush(t testing.TB, layout, dest string, extra ...string) {
	t.Helper()
	args := append([]string{"copy", "-q", "--dest-tls-verify=false"}, extra...)
	args = append(args, "oci:"+layout+":latest", "docker://"+dest)
	run(t, 2*time.Minute, "skopeo", args...)
}

// rawManifest fetches a manifest with skopeo.
func rawManifest(t testing.TB, ref string) v1.Manifest {
	t.Helper()
	out := run(t, time.Minute, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	var m v1.Manifest
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("skopeo inspect --raw %s: %v\n%s", ref, err, out)
	}
	return m
}

type pullJSON struct {
	Ref        string `json:"ref"`
	Digest     string `json:"digest"`
	ID         string `json:"id"`
	Downloaded int    `json:"downloaded"`
	Reused     int    `json:"reused"`
}

func pullImage(t testing.TB, ref string, extra ...string) pullJSON {
	t.Helper()
	return pullImageIn(t, storeRoot(t), ref, extra...)
}

func pullImageIn(t testing.TB, root, ref string, extra ...string) pullJSON {
	t.Helper()
	r := strataIn(t, root, defaultTimeout, append([]string{"pull", ref, "--format", "json"}, extra...)...)
	if r.Code != 0 {
		t.Fatalf("%v", r)
	}
	var p pullJSON
	if err := json.Unmarshal([]byte(r.Stdout), &p); err != nil {
		t.Fatalf("strata pull --format json: %v\n%s", err, r.Stdout)
	}
	return p
}

type pushJSON struct {
	Digest   string `json:"digest"`
	Uploaded int    `json:"uploaded"`
	Existing int    `json:"existing"`
	Mounted  int    `json:"mounted"`
}

func pushImage(t testing.TB, root, ref, dest string, extra ...string) pushJSON {
	t.Helper()
	r := strataIn(t, root, defaultTimeout, append([]string{"push", ref, dest, "--format", "json"}, extra...)...)
	if r.Code != 0 {
		t.Fatalf("%v", r)
	}
	var p pushJSON
	if err := json.Unmarshal([]byte(r.Stdout), &p); err != nil {
		t.Fatalf("strata push --format json: %v\n%s", err, r.Stdout)
	}
	return p
}

// layerTrees lists each layer directory of an image (with directory mtimes).
func layerTrees(t testing.TB, in inspected) [][]string {
	t.Helper()
	var out [][]string
	for _, d := range in.LayerDirs {
		out = append(out, treeManifestFull(t, d))
	}
	return out
}

// importedBusybox imports the busybox fixture's OCI layout into a store of
// its own and returns its inspection and layer trees: the oracle for pulls.
func importedBusybox(t *testing.T) (inspected, [][]string) {
	t.Helper()
	fx := fixture(t, "busybox")
	root := filepath.Join(t.TempDir(), "oracle-store")
	if r := strataIn(t, root, defaultTimeout, "import", filepath.Join(fx, "busybox-oci"), "--tag", "oracle/busybox:latest"); r.Code != 0 {
		t.Fatalf("%v", r)
	}
	r := strataIn(t, root, defaultTimeout, "inspect", "oracle/busybox:latest")
	if r.Code != 0 {
		t.Fatalf("%v", r)
	}
	in := parseInspect(t, r.Stdout)
	return in, layerTrees(t, in)
}

// TestRegistryPullBusybox pushes the busybox fixture with skopeo (gzip, and
// zstd), pulls it with strata and compares the image ID and every layer
// tree with a strata import of the same OCI layout; a second pull of the
// same image downloads nothing.
func TestRegistryPullBusybox(t *testing.T) {
	reg := startRegistry(t)
	fx := fixture(t, "busybox")
	want, wantLayers := importedBusybox(t)
	for _, c := range []struct {
		name, layout, mediaType string
		extra                   []string
	}{
		{"gzip", "busybox-oci", string(types.OCILayer), nil},
		// skopeo 1.9 reuses blobs it knows in any compression; starting
		// from the zstd layout makes the registry's copy zstd for sure.
		{"zstd", "busybox-oci-zstd", string(types.OCILayerZStd), []string{"--dest-compress-format", "zstd"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := reg.addr + "/fixture/busybox-" + c.name + ":1"
			skopeoPush(t, filepath.Join(fx, c.layout), ref, c.extra...)
			for _, l := range rawManifest(t, ref).Layers {
				if string(l.MediaType) != c.mediaType {
					t.Fatalf("skopeo pushed a %s layer, want %s", l.MediaType, c.mediaType)
				}
			}
			p := pullImage(t, ref, "--insecure")
			if p.ID != want.ID {
				t.Fatalf("pulled image ID %s, imported %s", p.ID, want.ID)
			}
			if p.Downloaded != 4 || p.Reused != 0 {
				t.Errorf("first pull: %+v, want 4 layers downloaded", p)
			}
			in := inspect(t, ref)
			for i, tree := range layerTrees(t, in) {
				sameTree(t, fmt.Sprintf("layer %d pulled vs imported", i+1), wantLayers[i], tree)
			}
			if !strings.Contains(in.Raw, p.Digest) {
				t.Errorf("strata inspect does not show the repo digest %s:\n%s", p.Digest, in.Raw)
			}
			again := pullImage(t, ref)
			if again.Downloaded != 0 || again.Reused != 4 || again.ID != want.ID {
				t.Errorf("second pull: %+v, want everything reused", again)
			}
		})
	}
}

// TestRegistryPushRoundTrip pushes an imported image and a committed one
// with strata, copies each back with skopeo into an OCI layout, and checks
// that a strata import of that layout is the same image and umoci unpacks
// it to the reference tree. Pushes within one registry mount blobs or find
// them there.
func TestRegistryPushRoundTrip(t *testing.T) {
	reg := startRegistry(t)
	fx := fixture(t, "busybox")
	want, wantLayers := importedBusybox(t)
	reference := treeManifest(t, filepath.Join(fx, "busybox-reference", "rootfs"))
	root := storeRoot(t) // the subtests push from this store
	mustStrata(t, "import", filepath.Join(fx, "busybox-oci"), "--tag", "local/busybox:1")

	copyBack := func(t *testing.T, ref string) (inspected, string) {
		t.Helper()
		layout := filepath.Join(t.TempDir(), "copied")
		run(t, 2*time.Minute, "skopeo", "copy", "-q", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":latest")
		root := filepath.Join(t.TempDir(), "check-store")
		if r := strataIn(t, root, defaultTimeout, "import", layout, "--tag", "check/img:1"); r.Code != 0 {
			t.Fatalf("%v", r)
		}
		r := strataIn(t, root, defaultTimeout, "inspect", "check/img:1")
		if r.Code != 0 {
			t.Fatalf("%v", r)
		}
		return parseInspect(t, r.Stdout), layout
	}
	umociTree := func(t *testing.T, layout string) []string {
		t.Helper()
		bundle := filepath.Join(t.TempDir(), "bundle")
		run(t, 2*time.Minute, "umoci", "unpack", "--image", layout+":latest", bundle)
		return treeManifest(t, filepath.Join(bundle, "rootfs"))
	}

	for _, comp := range []string{"gzip", "zstd"} {
		t.Run("imported-"+comp, func(t *testing.T) {
			dest := reg.addr + "/pushed/busybox:" + comp
			p := pushImage(t, root, "local/busybox:1", dest, "--compression", comp, "--force-compression", "--insecure")
			if p.Uploaded != 4 {
				t.Errorf("push: %+v, want 4 layers uploaded", p)
			}
			m := rawManifest(t, dest)
			if m.Config.Digest.String() != want.ID {
				t.Errorf("pushed config %s, want the image ID %s", m.Config.Digest, want.ID)
			}
			for _, l := range m.Layers {
				if !strings.HasSuffix(string(l.MediaType), "+"+comp) {
					t.Errorf("pushed a %s layer, want %s", l.MediaType, comp)
				}
			}
			got, layout := copyBack(t, dest)
			if got.ID != want.ID {
				t.Fatalf("image ID after push and skopeo copy %s, want %s", got.ID, want.ID)
			}
			for i, tree := range layerTrees(t, got) {
				sameTree(t, fmt.Sprintf("layer %d after the round trip", i+1), wantLayers[i], tree)
			}
			if comp == "gzip" {
				sameTree(t, "umoci unpack of the pushed image vs the reference", reference, umociTree(t, layout))
			}
		})
	}

	t.Run("mount and existing", func(t *testing.T) {
		p := pushImage(t, root, "local/busybox:1", reg.addr+"/pushed/busybox:again")
		if p.Existing != 4 || p.Uploaded != 0 {
			t.Errorf("push to the same repository: %+v, want 4 existing", p)
		}
		p = pushImage(t, root, "local/busybox:1", reg.addr+"/elsewhere/busybox:1")
		if p.Mounted != 4 || p.Uploaded != 0 {
			t.Errorf("push to another repository: %+v, want 4 mounted", p)
		}
	})

	t.Run("committed", func(t *testing.T) {
		requireCommands(t, "mount", "commit", "umount")
		mnt := filepath.Join(t.TempDir(), "mnt")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unmount(t, mnt) })
		strataOK := func(args ...string) result {
			t.Helper()
			r := strataIn(t, root, defaultTimeout, args...)
			if r.Code != 0 {
				t.Fatalf("%v", r)
			}
			return r
		}
		strataOK("mount", "local/busybox:1", mnt)
		if err := os.WriteFile(filepath.Join(mnt, "pushed-by-strata.txt"), []byte("hello registry\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(mnt, "bin", "busybox")); err != nil {
			t.Fatal(err)
		}
		strataOK("commit", mnt, "local/committed:1")
		strataOK("umount", mnt)
		src := parseInspect(t, strataOK("inspect", "local/committed:1").Stdout)
		if len(src.LayerDirs) != 5 {
			t.Fatalf("committed image has %d layers, want 5", len(src.LayerDirs))
		}
		dest := reg.addr + "/pushed/committed:1"
		p := pushImage(t, root, "local/committed:1", dest)
		if p.Uploaded < 1 || p.Uploaded+p.Existing+p.Mounted != 5 {
			t.Errorf("push of the committed image: %+v, want its new layer uploaded", p)
		}
		got, layout := copyBack(t, dest)
		if got.ID != src.ID {
			t.Fatalf("image ID after the round trip %s, want %s", got.ID, src.ID)
		}
		srcTrees := layerTrees(t, src)
		for i, tree := range layerTrees(t, got) {
			sameTree(t, fmt.Sprintf("committed image layer %d after the round trip", i+1), srcTrees[i], tree)
		}
		tree := umociTree(t, layout)
		var hello, busybox bool
		for _, l := range tree {
			hello = hello || strings.HasPrefix(l, "pushed-by-strata.txt ")
			busybox = busybox || strings.HasPrefix(l, "bin/busybox ")
		}
		if !hello || busybox {
			t.Errorf("umoci unpack of the pushed commit: new file %v (want true), deleted bin/busybox present %v (want false)", hello, busybox)
		}
	})
}

// faultProxy sits between strata and the registry: it can corrupt one
// blob, slow one down, and count what it sent of it.
type faultProxy struct {
	srv      *httptest.Server
	addr     string
	upstream string
	corrupt  atomic.Value // digest to corrupt ("" none)
	slow     atomic.Value // digest to send at slowRate
	slowRate int64        // bytes per second
	sent     atomic.Int64 // bytes of the slow blob sent
	mu       sync.Mutex
	fetched  []string // blob digests requested
}

func newFaultProxy(t testing.TB, upstream string) *faultProxy {
	p := &faultProxy{upstream: upstream, slowRate: 8 << 20}
	p.corrupt.Store("")
	p.slow.Store("")
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	p.addr = strings.TrimPrefix(p.srv.URL, "http://")
	return p
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) {
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = "http", p.upstream, p.upstream, ""
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		panic(http.ErrAbortHandler) // the registry is gone: so is the connection
	}
	defer resp.Body.Close()
	digest := ""
	if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet {
		digest = r.URL.Path[i+len("/blobs/"):]
		p.mu.Lock()
		p.fetched = append(p.fetched, digest)
		p.mu.Unlock()
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	corrupt := digest != "" && digest == p.corrupt.Load().(string)
	slow := digest != "" && digest == p.slow.Load().(string)
	buf := make([]byte, 32<<10)
	var n int64
	start := time.Now()
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			if corrupt && n <= resp.ContentLength/2 && n+int64(k) > resp.ContentLength/2 {
				buf[resp.ContentLength/2-n] ^= 0xff
			}
			if _, werr := w.Write(buf[:k]); werr != nil {
				return
			}
			n += int64(k)
			if slow {
				p.sent.Store(n)
				w.(http.Flusher).Flush()
				if ahead := time.Duration(n*int64(time.Second)/p.slowRate) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			panic(http.ErrAbortHandler) // the body broke off: break the client's too
		}
	}
}

func (p *faultProxy) blobsFetched() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.fetched...)
}

// putBigImage uploads an image of two uncompressed layers, a small one
// and one of size bytes of random data, and returns the big blob's digest.
func putBigImage(t testing.TB, ref string, size int) (bigDigest string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	small := tarOf(t, "etc/small.txt", []byte("small layer\n"))
	data := make([]byte, size)
	rand.Read(data)
	big := tarOf(t, "big.bin", data)
	var diffIDs []string
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for _, b := range [][]byte{small, big} {
		l := static.NewLayer(b, types.OCIUncompressedLayer)
		if err := remote.WriteLayer(r.Context(), l); err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		diffIDs = append(diffIDs, d.String())
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: int64(len(b)), Digest: d})
		bigDigest = d.String()
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cl := static.NewLayer(cfg, types.OCIConfigJSON)
	if err := remote.WriteLayer(r.Context(), cl); err != nil {
		t.Fatal(err)
	}
	cd, _ := cl.Digest()
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: cd}
	mb, _ := json.Marshal(m)
	if err := remote.Put(r, taggable{mb, types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
	return bigDigest
}

func tarOf(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// taggable is a manifest to remote.Put.
type taggable struct {
	b  []byte
	mt types.MediaType
}

func (m taggable) RawManifest() ([]byte, error)        { return m.b, nil }
func (m taggable) MediaType() (types.MediaType, error) { return m.mt, nil }

// startStrataBG starts `strata --root ROOT ARGS...` in the background.
func startStrataBG(t testing.TB, root string, args ...string) (*exec.Cmd, *bytes.Buffer, <-chan error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(strataBin, append([]string{"--root", root}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "STRATA_ROOT=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	return cmd, &out, done
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storedLayers lists the complete layer directories of a store.
func storedLayers(root string) []string {
	ents, _ := os.ReadDir(filepath.Join(root, "layers", "sha256"))
	var out []string
	for _, e := range ents {
		if fileExists(filepath.Join(root, "layers", "sha256", e.Name(), "layer.json")) {
			out = append(out, "sha256:"+e.Name())
		}
	}
	return out
}

// checkNoImage asserts a failed pull left no image and no staging dir.
func checkNoImage(t testing.TB, root string) {
	t.Helper()
	r := strataIn(t, root, defaultTimeout, "images", "--format", "json")
	if r.Code != 0 || strings.Contains(r.Stdout, `"id"`) {
		t.Errorf("the store shows an image after a failed pull:\n%v", r)
	}
	// strata images opened the store, which removes leftovers of dead pulls.
	ents, _ := os.ReadDir(filepath.Join(root, "tmp"))
	for _, e := range ents {
		t.Errorf("staging leftover %s", e.Name())
	}
}

// oneLine asserts that a failing command said why in one line.
func oneLine(t testing.TB, r result, want ...string) {
	t.Helper()
	if r.Code == 0 {
		t.Fatalf("want a failure:\n%v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
	last := lines[len(lines)-1]
	if len(lines) != 1 {
		t.Errorf("stderr has %d lines, want the one error line:\n%s", len(lines), r.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(last, w) {
			t.Errorf("error %q does not say %q", last, w)
		}
	}
}

// TestRegistryPullInterrupted stops pulls in the middle of a layer two
// ways: the registry killed by its PID, and strata itself killed with
// SIGKILL. Each leaves no image and no staging directory, keeps the layer
// finished before, and the next pull downloads only what is missing.
func TestRegistryPullInterrupted(t *testing.T) {
	reg := startRegistry(t)
	ref := reg.addr + "/fault/big:1"
	big := putBigImage(t, ref, 48<<20)
	proxy := newFaultProxy(t, reg.addr)
	proxy.slow.Store(big)
	viaProxy := proxy.addr + "/fault/big:1"

	interrupted := func(t *testing.T, kill func(cmd *exec.Cmd)) string {
		t.Helper()
		proxy.sent.Store(0)
		root := storeRoot(t)
		cmd, out, done := startStrataBG(t, root, "--log-level", "error", "pull", viaProxy, "--jobs", "1")
		waitFor(t, 60*time.Second, "the first layer in the store and 12 MiB of the second sent", func() bool {
			return len(storedLayers(root)) == 1 && proxy.sent.Load() >= 12<<20
		})
		kill(cmd)
		select {
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("strata pull: %v (want a failure)\n%s", err, out)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("strata pull did not end after the interruption\n%s", out)
		}
		return out.String()
	}
	resume := func(t *testing.T) {
		t.Helper()
		checkNoImage(t, storeRoot(t))
		if n := len(storedLayers(storeRoot(t))); n != 1 {
			t.Errorf("%d layers kept, want the one finished before the interruption", n)
		}
		proxy.slow.Store("")
		defer proxy.slow.Store(big)
		before := len(proxy.blobsFetched())
		p := pullImage(t, viaProxy)
		if p.Downloaded != 1 || p.Reused != 1 {
			t.Errorf("resumed pull: %+v, want 1 downloaded and 1 reused", p)
		}
		if got := proxy.blobsFetched()[before:]; len(got) != 2 || got[1] != big { // config, then the big layer
			t.Errorf("resumed pull fetched %v, want the config and %s", got, big)
		}
	}

	t.Run("registry killed", func(t *testing.T) {
		out := interrupted(t, func(*exec.Cmd) { reg.kill9(t) })
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 || !strings.Contains(out, "lost during the download") || !strings.Contains(out, big) {
			t.Errorf("want one line naming the layer and the lost connection, got:\n%s", out)
		}
		reg.start(t) // same data dir: the image is still there
		resume(t)
	})
	t.Run("strata killed", func(t *testing.T) {
		out := interrupted(t, func(cmd *exec.Cmd) { cmd.Process.Signal(syscall.SIGKILL) })
		if out != "" {
			t.Logf("output before SIGKILL: %s", out)
		}
		resume(t)
	})
}

// TestRegistryPullCorruptBlob serves one layer with a flipped byte.
func TestRegistryPullCorruptBlob(t *testing.T) {
	reg := startRegistry(t)
	fx := fixture(t, "busybox")
	ref := "/fixture/busybox:1"
	skopeoPush(t, filepath.Join(fx, "busybox-oci"), reg.addr+ref)
	m := rawManifest(t, reg.addr+ref)
	bad := m.Layers[1].Digest.String()
	proxy := newFaultProxy(t, reg.addr)
	proxy.corrupt.Store(bad)
	r := strata(t, "--log-level", "error", "pull", proxy.addr+ref)
	oneLine(t, r, "digest mismatch", bad)
	checkNoImage(t, storeRoot(t))
}

// TestRegistryPullNoPlatform pulls a manifest list that has no image for
// this host, then chooses one with --platform.
func TestRegistryPullNoPlatform(t *testing.T) {
	reg := startRegistry(t)
	fx := fixture(t, "busybox")
	skopeoPush(t, filepath.Join(fx, "busybox-oci"), reg.addr+"/multi/busybox:img")
	out := run(t, time.Minute, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+reg.addr+"/multi/busybox:img")
	h, size, err := v1.SHA256(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "s390x"}, {OS: "linux", Architecture: "ppc64le"}} {
		p := p
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: size, Digest: h, Platform: &p})
	}
	ib, _ := json.Marshal(idx)
	tag, err := name.NewTag(reg.addr+"/multi/busybox:list", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(tag, taggable{ib, types.OCIImageIndex}); err != nil {
		t.Fatal(err)
	}
	r := strata(t, "--log-level", "error", "pull", tag.String())
	oneLine(t, r, "no image for the platform linux/", "linux/s390x, linux/ppc64le", "--platform")
	checkNoImage(t, storeRoot(t))
	p := pullImage(t, tag.String(), "--platform", "linux/s390x")
	if p.Downloaded != 4 {
		t.Errorf("pull --platform linux/s390x: %+v", p)
	}
}

// htpasswd line for tester / s3cret-pass (bcrypt, cost 5), for
// docker-registry's htpasswd auth.
const htpasswdLine = "tester:$2b$05$Or2BLGdl7jBVsuYteNjNFeJlTSIbR6DaHCbGuLmMjObwLI0CFx79C\n"

// startAuthRegistry runs docker-registry with htpasswd authentication
// (registry.sh writes a config without it), killed by its PID at cleanup.
func startAuthRegistry(t testing.TB) string {
	t.Helper()
	requireCommands(t, "pull", "login")
	if _, err := exec.LookPath("docker-registry"); err != nil {
		registryScript(t) // registry.sh installs it; run it once
		r := &testReg{dir: filepath.Join(t.TempDir(), "install"), addr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
		r.start(t)
		r.stop(t)
	}
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(htpasswdLine), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s/data
http:
  addr: %s
auth:
  htpasswd:
    realm: strata-test
    path: %s
`, dir, addr, htpasswd)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-registry", "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
	})
	waitFor(t, 10*time.Second, "docker-registry with auth on "+addr, func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
	return addr
}

// TestRegistryAuth: a registry with htpasswd auth refuses a pull without
// credentials with one clear line; strata login checks and stores them
// (docker config), after which the pull works; podman's auth file works too.
func TestRegistryAuth(t *testing.T) {
	addr := startAuthRegistry(t)
	fx := fixture(t, "busybox")
	ref := addr + "/private/busybox:1"
	run(t, 2*time.Minute, "skopeo", "copy", "-q", "--dest-tls-verify=false", "--dest-creds", "tester:s3cret-pass",
		"oci:"+filepath.Join(fx, "busybox-oci")+":latest", "docker://"+ref)
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))

	r := strata(t, "--log-level", "error", "pull", ref)
	oneLine(t, r, "unauthorized", "requires credentials", "strata login "+addr)
	checkNoImage(t, storeRoot(t))

	login := func(pw string) (string, error) {
		cmd := exec.Command(strataBin, "login", addr, "-u", "tester", "--password-stdin")
		cmd.Stdin = strings.NewReader(pw + "\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := login("wrong"); err == nil || !strings.Contains(out, "wrong username or password") {
		t.Errorf("login with a wrong password: %v\n%s", err, out)
	}
	if out, err := login("s3cret-pass"); err != nil {
		t.Fatalf("login: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(home, ".docker", "config.json"))
	if err != nil || !strings.Contains(string(b), addr) {
		t.Fatalf("docker config after login: %v\n%s", err, b)
	}
	p := pullImage(t, ref)
	if p.Downloaded != 4 {
		t.Errorf("pull after login: %+v", p)
	}
	mustStrata(t, "logout", addr)

	// podman's auth file, read as docker's: {"auths":{"ADDR":{"auth":base64(user:pass)}}}
	auth := fmt.Sprintf(`{"auths":{%q:{"auth":"dGVzdGVyOnMzY3JldC1wYXNz"}}}`, addr)
	if err := os.MkdirAll(filepath.Join(home, "run", "containers"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "run", "containers", "auth.json"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	r = strataIn(t, filepath.Join(t.TempDir(), "store2"), defaultTimeout, "pull", ref)
	if r.Code != 0 {
		t.Fatalf("pull with podman's auth.json: %v", r)
	}
}

// TestRegistryMountPulls mounts a registry reference the store does not
// have: strata mount pulls it first.
func TestRegistryMountPulls(t *testing.T) {
	reg := startRegistry(t)
	requireCommands(t, "mount", "umount")
	fx := fixture(t, "busybox")
	ref := reg.addr + "/fixture/busybox:mount"
	skopeoPush(t, filepath.Join(fx, "busybox-oci"), ref)
	mnt := filepath.Join(t.TempDir(), "mnt")
	mount(t, ref, mnt, "--read-only")
	sameTree(t, "strata mount REGISTRY/REPO:TAG vs umoci unpack",
		treeManifest(t, filepath.Join(fx, "busybox-reference", "rootfs")), treeManifest(t, mnt))
	mustStrata(t, "umount", mnt)
	if in := inspect(t, ref); len(in.LayerDirs) != 4 {
		t.Errorf("the pulled image has %d layers", len(in.LayerDirs))
	}
}
