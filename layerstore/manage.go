package layerstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Tag points NAME[:TAG] (":latest" when omitted) at the image ref names.
func (s *Store) Tag(ref, newRef string) error {
	nr, err := parseTagRef(newRef)
	if err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	repos, err := s.loadRepos()
	if err != nil {
		return err
	}
	id, err := s.resolveID(repos, ref)
	if err != nil {
		return err
	}
	repos.set(nr, id)
	return s.saveRepos(repos)
}

// RemoveResult says what Remove did.
type RemoveResult struct {
	Untagged []string // familiar refs removed
	Deleted  string   // image ID deleted, "" when the image still has tags
}

// Remove untags ref; when the image has no tags left it is deleted. A ref
// that is an image ID (or ID prefix) removes every tag and the image. An
// image used by a live mount is refused with ErrInUse. Layers stay until gc.
func (s *Store) Remove(ref string) (*RemoveResult, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	repos, err := s.loadRepos()
	if err != nil {
		return nil, err
	}
	id, err := s.resolveID(repos, ref)
	if err != nil {
		return nil, err
	}
	mounts, err := s.Mounts()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if m.ImageID == id {
			return nil, fmt.Errorf("rmi %s: image %s is mounted on %s: %w", ref, ShortID(id), m.Mountpoint, ErrInUse)
		}
	}
	res := &RemoveResult{}
	byName := false
	if pr, err := parseRef(ref); err == nil && !strings.HasPrefix(ref, "sha256:") {
		if got, ok := repos.get(pr); ok && got == id {
			byName = true
			delete(repos.Repositories[pr.Repo], pr.String())
			res.Untagged = append(res.Untagged, FamiliarRef(pr.String()))
		}
	}
	tags, digests := repos.refsOf(id)
	if !byName || len(tags) == 0 {
		for _, r := range append(tags, digests...) {
			delete(repos.Repositories[refRepo(r)], r)
			res.Untagged = append(res.Untagged, FamiliarRef(r))
		}
		res.Deleted = id
	}
	if err := s.saveRepos(repos); err != nil {
		return nil, err
	}
	if res.Deleted != "" {
		if err := s.deleteDir(s.imagePath(id)); err != nil {
			return nil, fmt.Errorf("rmi %s: %w", ref, err)
		}
	}
	return res, nil
}

// deleteDir moves dir into tmp (so it disappears at once) and removes it.
func (s *Store) deleteDir(dir string) error {
	st, err := s.newStaging("rm")
	if err != nil {
		return err
	}
	defer st.Close()
	if err := os.Rename(dir, filepath.Join(st.dir, "x")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// GCResult says what GC removed.
type GCResult struct {
	Layers     []string // diffIDs removed
	Bytes      int64    // their uncompressed tar sizes
	TmpRemoved int      // stale staging dirs removed
	// KeptBusy: unreferenced layers kept because an import or pull is
	// running (its layers are committed before its image is).
	KeptBusy int
}

// GC removes layers that no image uses and stale staging directories.
func (s *Store) GC() (*GCResult, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := &GCResult{}
	used := map[string]bool{}
	ids, err := s.imageIDs()
	if err != nil {
		return nil, err
	}
	repos, err := s.loadRepos()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		meta, err := s.readImageMeta(id)
		if err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
		for _, l := range meta.Layers {
			used[strings.TrimPrefix(l.DiffID, "sha256:")] = true
		}
	}
	// Drop tags that point at images that no longer exist.
	have := map[string]bool{}
	for _, id := range ids {
		have[id] = true
	}
	dirty := false
	for _, m := range repos.Repositories {
		for k, v := range m {
			if !have[strings.TrimPrefix(v, "sha256:")] {
				delete(m, k)
				dirty = true
			}
		}
	}
	if dirty {
		if err := s.saveRepos(repos); err != nil {
			return nil, err
		}
	}
	ents, err := os.ReadDir(filepath.Join(s.root, "layers", "sha256"))
	if err != nil {
		return nil, err
	}
	busy, err := s.stagingInUse()
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if used[e.Name()] || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if busy {
			// Perhaps a layer of the image being imported, which
			// is written last: leave it to the next gc.
			res.KeptBusy++
			continue
		}
		d := "sha256:" + e.Name()
		if m, err := s.readLayerMeta(d); err == nil {
			res.Bytes += m.Size
		}
		if err := s.deleteDir(s.layerPath(d)); err != nil {
			return nil, fmt.Errorf("gc: layer %s: %w", d, err)
		}
		res.Layers = append(res.Layers, d)
	}
	n, err := s.cleanTmp()
	if err != nil {
		return nil, err
	}
	res.TmpRemoved = n
	return res, nil
}

// refRepo is the repository part of a full "repo:tag" or "repo@digest".
func refRepo(r string) string {
	if i := strings.LastIndex(r, "@"); i >= 0 {
		return r[:i]
	}
	if i := strings.LastIndex(r, ":"); i >= 0 && !strings.Contains(r[i:], "/") {
		return r[:i]
	}
	return r
}

func (s *Store) readImageMeta(id string) (*imageMeta, error) {
	b, err := os.ReadFile(filepath.Join(s.imagePath(id), "image.json"))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	var m imageMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("image %s: image.json: %w", id, err)
	}
	return &m, nil
}
