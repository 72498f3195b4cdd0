package layerstore

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
)

// Reference handling. Names are normalised the way docker does: "busybox",
// "busybox:latest" and "docker.io/library/busybox:latest" are one name. The
// store keeps the full form ("docker.io/library/busybox") and shows the
// familiar form ("busybox").

// The patterns compile on first use: every strata command starts with this
// package's init, and a mount's start is measured in milliseconds.
var (
	tagRe    = lazyRegexp(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	hexRe    = lazyRegexp(`^[0-9a-f]{1,64}$`)
	digestRe = lazyRegexp(`^sha256:[0-9a-f]{64}$`)
	// pathComponentRe is the distribution spec's rule for each
	// "/"-separated part of a repository name.
	pathComponentRe = lazyRegexp(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
)

func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// parsedRef is a normalised name reference.
type parsedRef struct {
	Repo   string // full repository, e.g. docker.io/library/busybox
	Tag    string // "" when Digest is set
	Digest string // "sha256:<hex>" or ""
}

func (r parsedRef) String() string {
	if r.Digest != "" {
		return r.Repo + "@" + r.Digest
	}
	return r.Repo + ":" + r.Tag
}

// ValidTag reports whether t follows the tag rule of the design.
func ValidTag(t string) bool { return tagRe().MatchString(t) }

// parseRef parses a name reference (name, name:tag, name@sha256:...).
func parseRef(s string) (parsedRef, error) {
	if s == "" || strings.ContainsAny(s, " \t\n\x00") {
		return parsedRef{}, fmt.Errorf("%q: %w", s, ErrInvalidReference)
	}
	// The tag part is checked with our own rule first so that the error
	// names the rule rather than the library's wording.
	if i := strings.LastIndex(s, ":"); i >= 0 && !strings.Contains(s[i:], "/") && !strings.Contains(s, "@") {
		if !ValidTag(s[i+1:]) {
			return parsedRef{}, fmt.Errorf("%q: tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}: %w", s, ErrInvalidReference)
		}
	}
	ref, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return parsedRef{}, fmt.Errorf("%q: %v: %w", s, err, ErrInvalidReference)
	}
	// go-containerregistry's weak validation lets through parts such as
	// "." ("docker.io/./"), which then do not parse back.
	for _, part := range strings.Split(ref.Context().RepositoryStr(), "/") {
		if !pathComponentRe().MatchString(part) {
			return parsedRef{}, fmt.Errorf("%q: repository part %q must match %s: %w", s, part, pathComponentRe(), ErrInvalidReference)
		}
	}
	repo := canonicalRepo(ref.Context())
	if len(repo) > 255 {
		// docker's limit is on the full name, so a short name near it
		// would not parse back once normalised
		return parsedRef{}, fmt.Errorf("%q: the full name %s is longer than 255 characters: %w", s, repo, ErrInvalidReference)
	}
	switch r := ref.(type) {
	case name.Tag:
		return parsedRef{Repo: repo, Tag: r.TagStr()}, nil
	case name.Digest:
		if !digestRe().MatchString(r.DigestStr()) {
			return parsedRef{}, fmt.Errorf("%q: only sha256 digests are supported: %w", s, ErrInvalidReference)
		}
		return parsedRef{Repo: repo, Digest: r.DigestStr()}, nil
	}
	return parsedRef{}, fmt.Errorf("%q: %w", s, ErrInvalidReference)
}

// parseTagRef parses a NAME[:TAG] that must not carry a digest.
func parseTagRef(s string) (parsedRef, error) {
	r, err := parseRef(s)
	if err != nil {
		return r, err
	}
	if r.Digest != "" {
		return parsedRef{}, fmt.Errorf("%q: a tag cannot carry a digest: %w", s, ErrInvalidReference)
	}
	return r, nil
}

func canonicalRepo(r name.Repository) string {
	reg := r.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.RepositoryStr()
}

// FamiliarName shortens a full repository the way docker prints it:
// docker.io/library/busybox -> busybox, docker.io/foo/bar -> foo/bar.
func FamiliarName(repo string) string {
	if s, ok := strings.CutPrefix(repo, "docker.io/library/"); ok && !strings.Contains(s, "/") {
		return s
	}
	if s, ok := strings.CutPrefix(repo, "docker.io/"); ok {
		// Kept whole when the short form would read as another
		// registry: docker.io/0.0/x is not 0.0/x.
		if first, _, _ := strings.Cut(s, "/"); strings.ContainsAny(first, ".:") || first == "localhost" {
			return repo
		}
		return s
	}
	return repo
}

// FamiliarRef shortens "repo:tag" or "repo@digest".
func FamiliarRef(ref string) string {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return FamiliarName(ref[:i]) + ref[i:]
	}
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i:], "/") {
		return FamiliarName(ref[:i]) + ref[i:]
	}
	return FamiliarName(ref)
}
