package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/strata-fs/strata/layerstore"
)

// resolveOrPull is Resolve, except that a reference that names a registry
// explicitly (its first component has a '.' or a ':', or is localhost) and
// is not in the store is pulled first (strata mount REGISTRY/REPO:TAG).
func resolveOrPull(g *globals, s *layerstore.Store, ref string) (*layerstore.Image, error) {
	img, err := s.Resolve(ref)
	if err == nil || !errors.Is(err, layerstore.ErrNotFound) || !namesRegistry(ref) {
		return img, err
	}
	ro, err := registryOptions(false)
	if err != nil {
		return nil, err
	}
	g.log.Infof("%s is not in the store: pulling it", ref)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := pull(ctx, g, s, ref, layerstore.PullOptions{Registry: ro})
	if err != nil {
		return nil, err
	}
	return res.Image, nil
}

func namesRegistry(ref string) bool {
	first, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}
