package layerstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Distribution metadata: which compressed blobs are known to carry a layer,
// and where they are. The store keeps layers extracted, never as blobs, so a
// push cannot give back a compressed blob byte for byte (the uncompressed tar
// it can: tarsplit.go). What it can do is refer to a blob that a registry
// already holds: pull records each blob it streamed (verified against the
// layer's diffID), push records each blob it made and where it put it. Push
// then skips blobs the destination has, mounts them from another repository
// of the same registry, and finds the digest of a blob it made before
// without compressing again. Docker keeps the same facts in its
// distribution/v2metadata-by-diffid.
//
// The file is layers/sha256/<diffID hex>/distribution.json beside
// layer.json; it goes away with the layer. Written under the store lock,
// atomically.

const distributionFile = "distribution.json"

// Generator names of blobs strata makes itself (push.go). A blob made by a
// generator can be made again byte for byte by the same generator, so its
// digest can be known before a push.
const (
	genGzip = "strata-gzip-1" // klauspost gzip, BestSpeed, no header name or time
	genZstd = "strata-zstd-1" // klauspost zstd, default level, one goroutine
)

// blobRecord is one blob known to decompress to the layer.
type blobRecord struct {
	Digest      string `json:"digest"`
	Size        int64  `json:"size"`
	MediaType   string `json:"media_type,omitempty"` // as the manifest named it
	Compression string `json:"compression"`          // from the bytes: gzip, zstd or none
	// Generator is set for blobs strata compressed itself (genGzip, genZstd).
	Generator string `json:"generator,omitempty"`
	// Repositories that held the blob when strata last saw it
	// ("registry/repo", e.g. "127.0.0.1:5055/team/app").
	Repositories []string `json:"repositories,omitempty"`
}

type distributionMeta struct {
	Blobs []blobRecord `json:"blobs"`
}

func (s *Store) readDistribution(diffID string) (*distributionMeta, error) {
	return readDistributionFile(filepath.Join(s.layerPath(diffID), distributionFile))
}

func readDistributionFile(p string) (*distributionMeta, error) {
	m := &distributionMeta{}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

// merge adds r to m (or the repositories of r to the record with its digest);
// it reports whether m changed.
func (m *distributionMeta) merge(r blobRecord) bool {
	for i := range m.Blobs {
		b := &m.Blobs[i]
		if b.Digest != r.Digest {
			continue
		}
		changed := false
		for _, repo := range r.Repositories {
			if !slices.Contains(b.Repositories, repo) {
				b.Repositories = append(b.Repositories, repo)
				changed = true
			}
		}
		if b.Generator == "" && r.Generator != "" {
			b.Generator, changed = r.Generator, true
		}
		if b.MediaType == "" && r.MediaType != "" {
			b.MediaType, changed = r.MediaType, true
		}
		if b.Compression == "" && r.Compression != "" {
			b.Compression, changed = r.Compression, true
		}
		return changed
	}
	m.Blobs = append(m.Blobs, r)
	return true
}

// drop removes the record of digest d; it reports whether m changed.
func (m *distributionMeta) drop(d string) bool {
	n := len(m.Blobs)
	m.Blobs = slices.DeleteFunc(m.Blobs, func(b blobRecord) bool { return b.Digest == d })
	return len(m.Blobs) != n
}

// writeDistribution writes m for a layer directory (staging or stored).
func writeDistribution(layerDir string, m *distributionMeta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(layerDir, distributionFile), append(b, '\n'), 0o600)
}

// updateDistribution applies f to a stored layer's distribution metadata
// under the store lock. A layer that is gone (gc) is not an error: the
// facts are about a layer no longer kept.
func (s *Store) updateDistribution(diffID string, f func(m *distributionMeta) bool) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if !s.hasLayer(diffID) {
		return nil
	}
	m, err := s.readDistribution(diffID)
	if err != nil {
		return err
	}
	if !f(m) {
		return nil
	}
	return writeDistribution(s.layerPath(diffID), m)
}

// blobCandidates lists what the store knows about the blobs of a layer:
// the distribution records, then the blob digests layer.json has verified
// that no record describes (their compression is unknown).
func (s *Store) blobCandidates(diffID string) ([]blobRecord, error) {
	m, err := s.readDistribution(diffID)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(m.Blobs)
	lm, err := s.readLayerMeta(diffID)
	if err != nil {
		return nil, err
	}
	for _, d := range lm.BlobDigests {
		if !slices.ContainsFunc(out, func(b blobRecord) bool { return b.Digest == d }) {
			out = append(out, blobRecord{Digest: d, Size: -1})
		}
	}
	return out, nil
}

// repoKey is the "registry/repo" form blobRecord.Repositories uses.
func repoKey(registry, repo string) string { return registry + "/" + strings.TrimPrefix(repo, "/") }
