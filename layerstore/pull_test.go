package layerstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Pull and push against go-containerregistry's in-memory registry, served
// on 127.0.0.1 by httptest (plain HTTP, as go-containerregistry allows for
// loopback). Faults are injected by a handler in front of it.

// testRegistry is an in-memory registry behind an optional fault handler.
type testRegistry struct {
	srv   *httptest.Server
	host  string
	inner http.Handler
	// fault, when set, may answer a request itself (it returns true).
	fault atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func newTestRegistry(t testing.TB) *testRegistry {
	tr := &testRegistry{inner: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := tr.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		tr.inner.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	tr.host = strings.TrimPrefix(tr.srv.URL, "http://")
	return tr
}

func (tr *testRegistry) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	if f == nil {
		tr.fault.Store(nil)
		return
	}
	tr.fault.Store(&f)
}

// noAuth keeps the tests away from the user's credential files.
var noAuth = RegistryOptions{Keychain: authn.NewMultiKeychain()}

// put uploads ti to the registry as repo:tag (with the layers compressed
// as ti.comp says) and returns the manifest digest.
func (tr *testRegistry) put(t testing.TB, ref string, ti testImage) string {
	t.Helper()
	r, err := name.ParseReference(tr.host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	man := tr.manifest(t, r.Context(), ti)
	if err := remote.Put(r, man); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + sha256Hex(man.b)
}

func (tr *testRegistry) manifest(t testing.TB, repo name.Repository, ti testImage) rawManifest {
	t.Helper()
	cfg := ti.config(t)
	if err := remote.WriteLayer(repo, static.NewLayer(cfg, types.OCIConfigJSON)); err != nil {
		t.Fatal(err)
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(cfg)}}}
	for i := range ti.layers {
		b := ti.blob(t, i)
		mt := types.OCIUncompressedLayer
		if i < len(ti.comp) && ti.comp[i] == "gzip" {
			mt = types.OCILayer
		} else if i < len(ti.comp) && ti.comp[i] == "zstd" {
			mt = types.OCILayerZStd
		}
		if err := remote.WriteLayer(repo, static.NewLayer(b, mt)); err != nil {
			t.Fatal(err)
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(b)}})
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return rawManifest{b: mb, mt: types.OCIManifestSchema1}
}

func pullOK(t testing.TB, s *Store, ref string, o PullOptions) *PullResult {
	t.Helper()
	if o.Registry.Keychain == nil {
		o.Registry.Keychain = noAuth.Keychain
	}
	res, err := s.Pull(context.Background(), ref, o)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	return res
}

// storeClean checks that nothing of a failed pull is visible: no image,
// no staging leftovers, every layer directory complete.
func storeClean(t testing.TB, s *Store, wantImages int) {
	t.Helper()
	imgs, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != wantImages {
		t.Errorf("%d images in the store, want %d", len(imgs), wantImages)
	}
	ents, _ := os.ReadDir(filepath.Join(s.root, "tmp"))
	for _, e := range ents {
		t.Errorf("staging leftover in tmp/: %s", e.Name())
	}
	layers, _ := os.ReadDir(filepath.Join(s.root, "layers", "sha256"))
	for _, l := range layers {
		if _, err := os.Stat(filepath.Join(s.root, "layers", "sha256", l.Name(), "layer.json")); err != nil {
			t.Errorf("layer %s is incomplete: %v", l.Name(), err)
		}
	}
}

func TestPullAndPushRoundTrip(t *testing.T) {
	reg := newTestRegistry(t)
	ti := testImage{layers: baseLayers(t), comp: []string{"gzip", "zstd"}, label: "roundtrip"}
	mdig := reg.put(t, "team/app:1.4", ti)

	s := newStore(t)
	ref := reg.host + "/team/app:1.4"
	res := pullOK(t, s, ref, PullOptions{})
	if res.Image.ID != ti.id(t) {
		t.Fatalf("image ID %s, want %s", res.Image.ID, ti.id(t))
	}
	if res.Digest != mdig || res.Manifest != mdig || res.Downloaded != 2 || res.Reused != 0 {
		t.Errorf("result %+v, want digest %s and 2 layers downloaded", res, mdig)
	}
	for i, l := range res.Image.Layers {
		if got := dumpTree(t, l.Dir); !slices.Equal(got, wantLayer(i)) {
			t.Errorf("layer %d:\n got %q\nwant %q", i+1, got, wantLayer(i))
		}
	}
	if !slices.Contains(res.Image.RepoTags, ref) || !slices.Contains(res.Image.RepoDigests, reg.host+"/team/app@"+mdig) {
		t.Errorf("tags %v digests %v", res.Image.RepoTags, res.Image.RepoDigests)
	}
	storeClean(t, s, 1)

	// A second pull downloads nothing.
	res2 := pullOK(t, s, ref, PullOptions{})
	if res2.Downloaded != 0 || res2.Reused != 2 || res2.Image.ID != res.Image.ID {
		t.Errorf("second pull: %+v", res2)
	}
	// A pull by a digest the store has does not even ask the registry.
	var asked atomic.Int32
	reg.setFault(func(w http.ResponseWriter, r *http.Request) bool { asked.Add(1); return false })
	res2 = pullOK(t, s, reg.host+"/team/app@"+mdig, PullOptions{})
	reg.setFault(nil)
	if res2.Image.ID != res.Image.ID || asked.Load() != 0 {
		t.Errorf("pull by a stored digest: %+v, %d requests", res2, asked.Load())
	}

	// Push to another repository of the same registry: both blobs mount.
	pres, err := s.Push(context.Background(), res.Image, reg.host+"/other/app:copy", PushOptions{Registry: noAuth})
	if err != nil {
		t.Fatal(err)
	}
	// (go-containerregistry's in-memory registry keeps one blob store for
	// all repositories: the blobs "exist" there already. Mounts are tested
	// against docker-registry in integration/registry_test.go.)
	if pres.Mounted+pres.Existing != 2 || pres.Uploaded != 0 {
		t.Errorf("push to the same registry: %+v, want 2 mounted or existing", pres)
	}
	if pres.Digest != mdig {
		t.Errorf("pushed manifest %s, want the original %s (same blobs)", pres.Digest, mdig)
	}
	// And again: the repository has them now.
	pres, err = s.Push(context.Background(), res.Image, reg.host+"/other/app:again", PushOptions{Registry: noAuth})
	if err != nil || pres.Existing != 2 {
		t.Fatalf("second push: %+v %v", pres, err)
	}

	// Push to an empty registry: the layers are compressed from the store;
	// pulled into a new store, the image is the same.
	for _, comp := range []string{CompressGzip, CompressZstd, CompressNone} {
		t.Run(comp, func(t *testing.T) {
			reg2 := newTestRegistry(t)
			dest := reg2.host + "/fresh/app:" + comp
			pres, err := s.Push(context.Background(), res.Image, dest, PushOptions{Registry: noAuth, Compression: comp})
			if err != nil {
				t.Fatal(err)
			}
			if pres.Uploaded != 2 || pres.Bytes == 0 {
				t.Errorf("push: %+v, want 2 layers uploaded", pres)
			}
			s2 := newStore(t)
			res3 := pullOK(t, s2, dest, PullOptions{})
			if res3.Image.ID != res.Image.ID {
				t.Fatalf("image ID after push and pull %s, want %s", res3.Image.ID, res.Image.ID)
			}
			for i, l := range res3.Image.Layers {
				if got := dumpTree(t, l.Dir); !slices.Equal(got, wantLayer(i)) {
					t.Errorf("layer %d:\n got %q\nwant %q", i+1, got, wantLayer(i))
				}
			}
			for _, l := range res3.Image.Layers {
				m, err := s2.readLayerMeta(l.DiffID)
				if err != nil {
					t.Fatal(err)
				}
				if want := map[string]string{CompressGzip: "gzip", CompressZstd: "zstd", CompressNone: "none"}[comp]; !slices.Equal(m.Compressions, []string{want}) {
					t.Errorf("layer %s pushed as %v, want %s", l.DiffID, m.Compressions, want)
				}
			}
			// The blobs strata made are deterministic and remembered: a
			// push to a third registry gives the same manifest, and the
			// second push to this one uploads nothing.
			reg3 := newTestRegistry(t)
			p3, err := s.Push(context.Background(), res.Image, reg3.host+"/x/y:z", PushOptions{Registry: noAuth, Compression: comp})
			if err != nil {
				t.Fatal(err)
			}
			if p3.Digest != pres.Digest {
				t.Errorf("manifest %s on a second registry, %s on the first: blobs are not deterministic", p3.Digest, pres.Digest)
			}
			p4, err := s.Push(context.Background(), res.Image, dest, PushOptions{Registry: noAuth, Compression: comp})
			if err != nil || p4.Uploaded != 0 || p4.Existing != 2 {
				t.Errorf("push again: %+v %v, want 2 existing", p4, err)
			}
		})
	}
}

func TestPullPlatform(t *testing.T) {
	reg := newTestRegistry(t)
	host := HostPlatform()
	r, _ := name.ParseReference(reg.host + "/multi/app:img")
	mine := testImage{layers: baseLayers(t)[:1], comp: []string{"gzip"}, label: "mine"}
	other := testImage{layers: baseLayers(t)[1:], comp: []string{"gzip"}, label: "other"}
	mm := reg.manifest(t, r.Context(), mine)
	om := reg.manifest(t, r.Context(), other)
	for _, m := range []rawManifest{mm, om} {
		if err := remote.Put(r.Context().Digest("sha256:"+sha256Hex(m.b)), m); err != nil {
			t.Fatal(err)
		}
	}
	desc := func(m rawManifest, p v1.Platform) v1.Descriptor {
		return v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(m.b)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(m.b)}, Platform: &p}
	}
	putIndex := func(tag string, ds ...v1.Descriptor) {
		b, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: ds})
		tr, _ := name.NewTag(reg.host + "/multi/app:" + tag)
		if err := remote.Put(tr, rawManifest{b: b, mt: types.OCIImageIndex}); err != nil {
			t.Fatal(err)
		}
	}
	putIndex("both", desc(om, v1.Platform{OS: "linux", Architecture: "s390x"}), desc(mm, host),
		desc(om, v1.Platform{OS: "unknown", Architecture: "unknown"}))
	putIndex("foreign", desc(om, v1.Platform{OS: "linux", Architecture: "s390x"}), desc(om, v1.Platform{OS: "linux", Architecture: "ppc64le"}))

	s := newStore(t)
	res := pullOK(t, s, reg.host+"/multi/app:both", PullOptions{})
	if res.Image.ID != mine.id(t) || res.Platform != platformString(host) || res.Manifest != "sha256:"+sha256Hex(mm.b) {
		t.Errorf("host platform: got %+v", res)
	}
	res = pullOK(t, s, reg.host+"/multi/app:both", PullOptions{Platform: "linux/s390x"})
	if res.Image.ID != other.id(t) {
		t.Errorf("--platform linux/s390x: got image %s, want %s", res.Image.ID, other.id(t))
	}

	s2 := newStore(t)
	_, err := s2.Pull(context.Background(), reg.host+"/multi/app:foreign", PullOptions{Registry: noAuth})
	if !errors.Is(err, ErrNoPlatform) {
		t.Fatalf("want ErrNoPlatform, got %v", err)
	}
	for _, want := range []string{platformString(host), "linux/s390x, linux/ppc64le", "--platform"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	storeClean(t, s2, 0)
}

// blobPath reports whether r fetches the blob with digest d.
func isBlobGet(r *http.Request, d string) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+d)
}

func TestPullFaults(t *testing.T) {
	reg := newTestRegistry(t)
	layers := baseLayers(t)
	big := mkTar(t, file("big", strings.Repeat("0123456789abcdef", 1<<16), 0o644)) // 1 MiB
	ti := testImage{layers: [][]byte{layers[0], big}, comp: []string{"gzip", ""}, label: "faults"}
	reg.put(t, "f/app:1", ti)
	ref := reg.host + "/f/app:1"
	good, bad := digestOf(ti.blob(t, 0)), digestOf(ti.blob(t, 1))

	t.Run("corrupt blob", func(t *testing.T) {
		reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			if !isBlobGet(r, bad) {
				return false
			}
			rec := httptest.NewRecorder()
			reg.inner.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			b[len(b)/2] ^= 0xff
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(b)
			return true
		})
		defer reg.setFault(nil)
		s := newStore(t)
		_, err := s.Pull(context.Background(), ref, PullOptions{Registry: noAuth, Jobs: 1})
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), bad) {
			t.Fatalf("want a digest mismatch naming %s, got %v", bad, err)
		}
		storeClean(t, s, 0)
	})

	t.Run("connection lost, then resumed", func(t *testing.T) {
		reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			if !isBlobGet(r, bad) {
				return false
			}
			rec := httptest.NewRecorder()
			reg.inner.ServeHTTP(rec, r)
			w.Header().Set("Content-Length", rec.Header().Get("Content-Length"))
			w.WriteHeader(http.StatusOK)
			w.Write(rec.Body.Bytes()[:rec.Body.Len()/3])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the registry goes away mid-blob
		})
		s := newStore(t)
		_, err := s.Pull(context.Background(), ref, PullOptions{Registry: noAuth, Jobs: 1})
		reg.setFault(nil)
		if !errors.Is(err, ErrRegistry) || !strings.Contains(err.Error(), "connection to "+reg.host+" lost") {
			t.Fatalf("want a lost connection, got %v", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error is more than one line: %q", err)
		}
		storeClean(t, s, 0)
		// The first layer stayed; the next pull fetches only the second.
		if !s.hasLayer(digestOf(layers[0])) {
			t.Errorf("the layer finished before the failure was not kept")
		}
		var fetched []string
		reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				fetched = append(fetched, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			}
			return false
		})
		defer reg.setFault(nil)
		res := pullOK(t, s, ref, PullOptions{Jobs: 1})
		if res.Downloaded != 1 || res.Reused != 1 || slices.Contains(fetched, good) {
			t.Errorf("resumed pull: %+v, fetched %v; want only %s", res, fetched, bad)
		}
		storeClean(t, s, 1)
	})

	t.Run("unauthorized", func(t *testing.T) {
		reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			if u, p, ok := r.BasicAuth(); ok && u == "user" && p == "secret" {
				return false
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
			return true
		})
		defer reg.setFault(nil)
		s := newStore(t)
		_, err := s.Pull(context.Background(), ref, PullOptions{Registry: noAuth})
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "strata login "+reg.host) {
			t.Fatalf("want unauthorized with a hint, got %v", err)
		}
		storeClean(t, s, 0)
		// Login checks the password.
		ro := RegistryOptions{Keychain: noAuth.Keychain}
		t.Setenv("DOCKER_CONFIG", t.TempDir())
		if _, err := Login(context.Background(), reg.host, "user", "wrong", ro); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("login with a wrong password: %v", err)
		}
		file, err := Login(context.Background(), reg.host, "user", "secret", ro)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(file)
		if !bytes.Contains(b, []byte(reg.host)) {
			t.Errorf("%s does not name %s:\n%s", file, reg.host, b)
		}
		res, err := s.Pull(context.Background(), ref, PullOptions{Registry: RegistryOptions{}})
		if err != nil {
			t.Fatalf("pull after login: %v", err)
		}
		if res.Image.ID != ti.id(t) {
			t.Errorf("image %s", res.Image.ID)
		}
		if f, err := Logout(reg.host, ro); err != nil || f == "" {
			t.Fatalf("logout: %q %v", f, err)
		}
		if _, err := s.Pull(context.Background(), ref, PullOptions{Registry: RegistryOptions{}}); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("pull after logout: %v", err)
		}
	})

	t.Run("not found", func(t *testing.T) {
		s := newStore(t)
		_, err := s.Pull(context.Background(), reg.host+"/f/app:nope", PullOptions{Registry: noAuth})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("want ErrNotFound, got %v", err)
		}
	})
}

func TestPodmanAuthFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker")) // none
	t.Setenv("HOME", dir)
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "cfg"))
	if err := os.MkdirAll(filepath.Join(dir, "cfg", "containers"), 0o700); err != nil {
		t.Fatal(err)
	}
	// "user:secret"
	auth := `{"auths":{"reg.example:5000":{"auth":"dXNlcjpzZWNyZXQ="}}}`
	if err := os.WriteFile(filepath.Join(dir, "cfg", "containers", "auth.json"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository("reg.example:5000/a/b")
	a, err := DefaultKeychain().Resolve(repo)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth != "dXNlcjpzZWNyZXQ=" && (cfg.Username != "user" || cfg.Password != "secret") {
		t.Errorf("credentials from podman's auth.json: %+v", cfg)
	}
	other, _ := name.NewRepository("other.example/a")
	if a, _ := DefaultKeychain().Resolve(other); a != authn.Anonymous {
		t.Errorf("credentials for a registry the file does not name")
	}
}

func TestRegistriesConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "registries.json")
	os.WriteFile(p, []byte(`{"insecure-registries": ["reg.lan:5000", "build-host", "10.0.0.0/8"]}`), 0o600)
	c, err := LoadRegistriesConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	o := RegistryOptions{InsecureRegistries: c.InsecureRegistries}
	for reg, want := range map[string]bool{
		"reg.lan:5000": true, "reg.lan:5001": false, "reg.lan": false, "build-host": true, "build-host:443": true,
		"10.1.2.3:5000": true, "11.1.2.3": false, "docker.io": false,
	} {
		if got := o.insecureFor(reg); got != want {
			t.Errorf("insecureFor(%q) = %v, want %v", reg, got, want)
		}
	}
	if c, err := LoadRegistriesConfig(filepath.Join(t.TempDir(), "missing.json")); err != nil || len(c.InsecureRegistries) != 0 {
		t.Errorf("missing file: %+v %v", c, err)
	}
	os.WriteFile(p, []byte(`{"insecure-registries": ["10.0.0.0/33"]}`), 0o600)
	if _, err := LoadRegistriesConfig(p); err == nil {
		t.Errorf("a bad CIDR was accepted")
	}
	r, err := (RegistryOptions{Insecure: true}).parseRemoteRef("reg.example/a:b")
	if err != nil || r.Context().Scheme() != "http" {
		t.Errorf("--insecure: scheme %v %v", r, err)
	}
}

func TestPushOptions(t *testing.T) {
	reg := newTestRegistry(t)
	ti := testImage{layers: baseLayers(t), comp: []string{"gzip", "gzip"}, label: "options"}
	reg.put(t, "src/app:1", ti)
	s := newStore(t)
	img := pullOK(t, s, reg.host+"/src/app:1", PullOptions{}).Image
	ctx := context.Background()
	manifestOf := func(ref string) v1.Manifest {
		t.Helper()
		r, _ := name.ParseReference(ref)
		d, err := remote.Get(r)
		if err != nil {
			t.Fatal(err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(d.Manifest))
		if err != nil {
			t.Fatal(err)
		}
		return *m
	}

	// The registry has gzip blobs of both layers: used, unless zstd is forced.
	p, err := s.Push(ctx, img, reg.host+"/dst/app:zstd", PushOptions{Registry: noAuth, Compression: CompressZstd})
	if err != nil || p.Uploaded != 0 {
		t.Fatalf("push --compression zstd: %+v %v, want the registry's gzip blobs reused", p, err)
	}
	p, err = s.Push(ctx, img, reg.host+"/dst/app:zstd-forced", PushOptions{Registry: noAuth, Compression: CompressZstd, ForceCompression: true})
	if err != nil || p.Uploaded != 2 {
		t.Fatalf("push --compression zstd --force-compression: %+v %v, want 2 uploaded", p, err)
	}
	for _, l := range manifestOf(reg.host + "/dst/app:zstd-forced").Layers {
		if l.MediaType != types.OCILayerZStd {
			t.Errorf("forced zstd push has a %s layer", l.MediaType)
		}
	}

	// Docker manifests: docker media types; no zstd.
	if _, err := s.Push(ctx, img, reg.host+"/dst/app:docker", PushOptions{Registry: noAuth, Format: PushDocker}); err != nil {
		t.Fatal(err)
	}
	m := manifestOf(reg.host + "/dst/app:docker")
	if m.MediaType != types.DockerManifestSchema2 || m.Config.MediaType != types.DockerConfigJSON || m.Layers[0].MediaType != types.DockerLayer {
		t.Errorf("docker format: %s %s %s", m.MediaType, m.Config.MediaType, m.Layers[0].MediaType)
	}
	if _, err := s.Push(ctx, img, reg.host+"/dst/app:x", PushOptions{Registry: noAuth, Format: PushDocker, Compression: CompressZstd}); err == nil {
		t.Errorf("docker format with zstd was accepted")
	}

	// A noted digest that the compressor no longer gives: the push notices,
	// uploads a fresh blob and forgets the stale digest.
	reg2 := newTestRegistry(t)
	top := img.Layers[1].DiffID
	stale := blobRecord{Digest: digestOf([]byte("not this blob")), Size: 13, Compression: CompressGzip, Generator: genGzip}
	if err := s.updateDistribution(top, func(m *distributionMeta) bool { return m.merge(stale) }); err != nil {
		t.Fatal(err)
	}
	p, err = s.Push(ctx, img, reg2.host+"/fresh/app:1", PushOptions{Registry: noAuth, Compression: CompressGzip, ForceCompression: true})
	if err != nil || p.Uploaded != 2 {
		t.Fatalf("push with a stale noted digest: %+v %v", p, err)
	}
	dm, _ := s.readDistribution(top)
	if slices.ContainsFunc(dm.Blobs, func(b blobRecord) bool { return b.Digest == stale.Digest }) {
		t.Errorf("the stale digest is still noted: %+v", dm.Blobs)
	}
	s2 := newStore(t)
	if got := pullOK(t, s2, reg2.host+"/fresh/app:1", PullOptions{}).Image.ID; got != img.ID {
		t.Errorf("image %s after the push, want %s", got, img.ID)
	}

	// A layer whose tar cannot be made again is an error naming it, and
	// nothing is pushed under the tag.
	if err := os.Remove(filepath.Join(s.layerPath(top), tarSplitFile)); err != nil {
		t.Fatal(err)
	}
	reg3 := newTestRegistry(t)
	if _, err := s.Push(ctx, img, reg3.host+"/x/app:1", PushOptions{Registry: noAuth}); !errors.Is(err, ErrNoTarSplit) || !strings.Contains(err.Error(), top) {
		t.Errorf("push without tar-split: %v", err)
	}
	r, _ := name.ParseReference(reg3.host + "/x/app:1")
	if _, err := remote.Get(r); err == nil {
		t.Errorf("a manifest was pushed although a layer failed")
	}
}
