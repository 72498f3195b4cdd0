package layerstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Registry access: how strata talks to OCI distribution registries (pull.go,
// push.go). The protocol is go-containerregistry's (remote, transport); this
// file decides credentials and which registries may be reached over plain
// HTTP, and turns the library's errors into one line a user can act on.

// Registry errors. Pull and Push wrap these (and ErrNotFound,
// ErrDigestMismatch) so that callers test with errors.Is.
var (
	// ErrUnauthorized: the registry wants credentials, or refused the ones given.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNoPlatform: a manifest list (image index) has no image for the platform asked for.
	ErrNoPlatform = errors.New("no image for the platform")
	// ErrRegistry: the registry could not be reached, went away, or answered
	// with an error that is none of the above.
	ErrRegistry = errors.New("registry error")
)

// RegistryOptions say how to reach registries. The zero value uses the
// docker and podman credential files and plain HTTP only where
// go-containerregistry allows it by default (localhost, loopback and
// private addresses).
type RegistryOptions struct {
	// Insecure allows plain HTTP and unverified TLS certificates for every registry.
	Insecure bool
	// InsecureRegistries allows the same for these registries only: a
	// "host:port", a "host" (any port) or a CIDR ("10.0.0.0/8").
	// LoadRegistriesConfig reads them from the registries config file.
	InsecureRegistries []string
	// Keychain finds credentials; nil is DefaultKeychain.
	Keychain authn.Keychain
	// UserAgent is sent with every request.
	UserAgent string
	// Transport is the base HTTP transport (tests); nil is a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
}

// insecureFor reports whether reg may be reached over plain HTTP / without
// verifying its certificate.
func (o RegistryOptions) insecureFor(reg string) bool {
	if o.Insecure {
		return true
	}
	host := reg
	if h, _, err := net.SplitHostPort(reg); err == nil {
		host = h
	}
	for _, e := range o.InsecureRegistries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			if _, n, err := net.ParseCIDR(e); err == nil {
				if ip := net.ParseIP(host); ip != nil && n.Contains(ip) {
					return true
				}
			}
		case e == reg, e == host:
			return true
		}
	}
	return false
}

// parseRemoteRef parses a registry reference ("registry/repo:tag",
// "repo@sha256:…"; docker.io and :latest by default).
func (o RegistryOptions) parseRemoteRef(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("%q: %v: %w", s, err, ErrInvalidReference)
	}
	if o.insecureFor(ref.Context().RegistryStr()) {
		ref, err = name.ParseReference(s, name.WeakValidation, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("%q: %v: %w", s, err, ErrInvalidReference)
		}
	}
	return ref, nil
}

func (o RegistryOptions) keychain() authn.Keychain {
	if o.Keychain != nil {
		return o.Keychain
	}
	return DefaultKeychain()
}

// transport is the base HTTP transport for reg.
func (o RegistryOptions) transport(reg string) http.RoundTripper {
	if o.Transport != nil {
		return o.Transport
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	if o.insecureFor(reg) {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	return t
}

// registryBackoff retries a failed request twice, quickly: a registry that
// is gone should give its error within seconds (the library's default waits
// 1 s then 3 s).
var registryBackoff = remote.Backoff{Duration: 300 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}

// remoteOptions are the go-containerregistry options for one registry.
func (o RegistryOptions) remoteOptions(ctx context.Context, reg string, jobs int) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(o.keychain()),
		remote.WithTransport(o.transport(reg)),
		remote.WithRetryBackoff(registryBackoff),
	}
	if jobs > 0 {
		opts = append(opts, remote.WithJobs(jobs))
	}
	if o.UserAgent != "" {
		opts = append(opts, remote.WithUserAgent(o.UserAgent))
	}
	return opts
}

// hasCredentials reports whether the keychain has credentials for res.
func (o RegistryOptions) hasCredentials(res authn.Resource) bool {
	a, err := o.keychain().Resolve(res)
	return err == nil && a != authn.Anonymous
}

// registryErr turns a go-containerregistry error into one line naming what
// went wrong with which registry, wrapping the matching sentinel.
func (o RegistryOptions) registryErr(what string, repo name.Repository, err error) error {
	if err == nil {
		return nil
	}
	reg := repo.RegistryStr()
	if errors.Is(err, context.Canceled) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized:
			if o.hasCredentials(repo) {
				return fmt.Errorf("%s: %w: %s rejected the credentials for %s (strata login %s)", what, ErrUnauthorized, reg, repo, reg)
			}
			return fmt.Errorf("%s: %w: %s requires credentials and none are stored for it (strata login %s)", what, ErrUnauthorized, reg, reg)
		case http.StatusForbidden:
			return fmt.Errorf("%s: %w: %s denied access to %s", what, ErrUnauthorized, reg, repo)
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w in %s", what, ErrNotFound, reg)
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode:
				return fmt.Errorf("%s: %w: %s: %s", what, ErrUnauthorized, reg, d.Message)
			case transport.DeniedErrorCode:
				return fmt.Errorf("%s: %w: %s denied access to %s: %s", what, ErrUnauthorized, reg, repo, d.Message)
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("%s: %w in %s (%s)", what, ErrNotFound, reg, d.Message)
			}
		}
		msg := fmt.Sprintf("HTTP %d %s", te.StatusCode, http.StatusText(te.StatusCode))
		if len(te.Errors) > 0 {
			msg += ": " + te.Errors[0].String()
		}
		return fmt.Errorf("%s: %w: %s answered %s", what, ErrRegistry, reg, msg)
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: %w: cannot connect to %s (connection refused)", what, ErrRegistry, reg)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%s: %w: connection to %s lost (%v)", what, ErrRegistry, reg, errors.Unwrap(err))
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%s: %w: %s timed out", what, ErrRegistry, reg)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("%s: %w: cannot resolve %s: %v", what, ErrRegistry, reg, dnsErr)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%s: %w: %s speaks plain HTTP; allow it with --insecure or the registries config", what, ErrRegistry, reg)
	}
	return fmt.Errorf("%s: %w: %s: %v", what, ErrRegistry, reg, err)
}

// --- credentials ------------------------------------------------------------

// DefaultKeychain finds credentials the way docker and podman store them:
// go-containerregistry's authn.DefaultKeychain ($DOCKER_CONFIG/config.json or
// ~/.docker/config.json, credential helpers included; podman's file only
// when there is no docker config), then podman's auth files even when a
// docker config exists: $REGISTRY_AUTH_FILE,
// $XDG_RUNTIME_DIR/containers/auth.json and
// ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json.
func DefaultKeychain() authn.Keychain {
	return authn.NewMultiKeychain(authn.DefaultKeychain, podmanKeychain{})
}

// PodmanAuthFiles lists podman's credential files in the order they are read.
func PodmanAuthFiles() []string {
	var out []string
	if p := os.Getenv("REGISTRY_AUTH_FILE"); p != "" {
		out = append(out, p)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		out = append(out, filepath.Join(d, "containers", "auth.json"))
	}
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cfg = filepath.Join(home, ".config")
		}
	}
	if cfg != "" {
		out = append(out, filepath.Join(cfg, "containers", "auth.json"))
	}
	return out
}

type podmanKeychain struct{}

func (podmanKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	for _, p := range PodmanAuthFiles() {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		cf, err := config.LoadFromReader(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if a := authFrom(cf, target); a != nil {
			return a, nil
		}
	}
	return authn.Anonymous, nil
}

// authFrom looks target up in a config file's auths: the repository first,
// then the registry (docker.io under its historical key).
func authFrom(cf *configfile.ConfigFile, target authn.Resource) authn.Authenticator {
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		ac, ok := cf.AuthConfigs[key]
		if !ok {
			continue
		}
		if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
			continue
		}
		return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
			IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken})
	}
	return nil
}

// authKey is the key docker uses for a registry in config.json.
func authKey(reg name.Registry) string {
	if reg.RegistryStr() == name.DefaultRegistry {
		return authn.DefaultAuthKey
	}
	return reg.RegistryStr()
}

// Login checks user/password against registry (a request to /v2/ with
// them, as docker login does) and stores them in the docker config file
// ($DOCKER_CONFIG/config.json or ~/.docker/config.json, or the credential
// helper it names). It returns the file written.
func Login(ctx context.Context, registry, user, password string, o RegistryOptions) (string, error) {
	fail := func(err error) (string, error) { return "", fmt.Errorf("login %s: %w", registry, err) }
	if user == "" || password == "" {
		return fail(errors.New("need a username and a password"))
	}
	reg, err := o.parseRegistry(registry)
	if err != nil {
		return fail(err)
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: user, Password: password})
	if err := o.checkAuth(ctx, reg, auth); err != nil {
		return "", err
	}
	cf, err := config.Load(os.Getenv("DOCKER_CONFIG"))
	if err != nil {
		return fail(err)
	}
	key := authKey(reg)
	if err := cf.GetCredentialsStore(key).Store(types.AuthConfig{ServerAddress: key, Username: user, Password: password}); err != nil {
		return fail(fmt.Errorf("storing credentials: %w", err))
	}
	if err := cf.Save(); err != nil {
		return fail(fmt.Errorf("saving %s: %w", cf.Filename, err))
	}
	return cf.Filename, nil
}

// Logout removes the stored credentials for registry from the docker config.
// It returns the file written, or "" when there were none.
func Logout(registry string, o RegistryOptions) (string, error) {
	reg, err := o.parseRegistry(registry)
	if err != nil {
		return "", fmt.Errorf("logout %s: %w", registry, err)
	}
	cf, err := config.Load(os.Getenv("DOCKER_CONFIG"))
	if err != nil {
		return "", fmt.Errorf("logout %s: %w", registry, err)
	}
	key := authKey(reg)
	if _, ok := cf.AuthConfigs[key]; !ok && cf.CredentialsStore == "" && cf.CredentialHelpers[key] == "" {
		return "", nil
	}
	if err := cf.GetCredentialsStore(key).Erase(key); err != nil {
		return "", fmt.Errorf("logout %s: %w", registry, err)
	}
	if err := cf.Save(); err != nil {
		return "", fmt.Errorf("logout %s: saving %s: %w", registry, cf.Filename, err)
	}
	return cf.Filename, nil
}

func (o RegistryOptions) parseRegistry(s string) (name.Registry, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://"), "/")
	if s == "docker.io" || s == "index.docker.io" || s == "registry-1.docker.io" {
		s = name.DefaultRegistry
	}
	opts := []name.Option{name.WeakValidation}
	if o.insecureFor(s) {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(s, opts...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("%q: %v: %w", s, err, ErrInvalidReference)
	}
	return reg, nil
}

// checkAuth makes one authenticated request to the registry's /v2/.
func (o RegistryOptions) checkAuth(ctx context.Context, reg name.Registry, auth authn.Authenticator) error {
	what := "login " + reg.RegistryStr()
	repo := reg.Repo("strata-login-check")
	tr, err := transport.NewWithContext(ctx, reg, auth, o.transport(reg.RegistryStr()), []string{reg.Scope(transport.PullScope)})
	if err != nil {
		return o.loginErr(what, repo, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return o.loginErr(what, repo, err)
	}
	defer resp.Body.Close()
	return o.loginErr(what, repo, transport.CheckError(resp, http.StatusOK))
}

func (o RegistryOptions) loginErr(what string, repo name.Repository, err error) error {
	if err == nil {
		return nil
	}
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("%s: %w: wrong username or password", what, ErrUnauthorized)
	}
	return o.registryErr(what, repo, err)
}

// --- the registries config file ---------------------------------------------

// RegistriesConfigPath is the registries config file strata reads:
// $STRATA_REGISTRIES_CONFIG, else /etc/strata/registries.json as root and
// ${XDG_CONFIG_HOME:-~/.config}/strata/registries.json otherwise.
func RegistriesConfigPath() string {
	if p := os.Getenv("STRATA_REGISTRIES_CONFIG"); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return "/etc/strata/registries.json"
	}
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cfg = filepath.Join(home, ".config")
	}
	return filepath.Join(cfg, "strata", "registries.json")
}

// RegistriesConfig is the registries config file. Its one key is docker's
// daemon.json key, so the same list can be copied over:
//
//	{"insecure-registries": ["registry.lan:5000", "build-host", "10.0.0.0/8"]}
type RegistriesConfig struct {
	InsecureRegistries []string `json:"insecure-registries"`
}

// LoadRegistriesConfig reads the registries config file at path; a file
// that does not exist is an empty config.
func LoadRegistriesConfig(path string) (*RegistriesConfig, error) {
	c := &RegistriesConfig{}
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registries config: %w", err)
	}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("registries config %s: %w", path, err)
	}
	for _, e := range c.InsecureRegistries {
		if strings.Contains(e, "/") {
			if _, _, err := net.ParseCIDR(e); err != nil {
				return nil, fmt.Errorf("registries config %s: insecure-registries: %q is not host[:port] or a CIDR", path, e)
			}
		}
	}
	return c, nil
}
