package layerstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sirupsen/logrus"
)

// CommitOptions describe a commit of a writable layer.
type CommitOptions struct {
	Upper, Work string // the writable layer and its work dir
	Tag         string // NAME[:TAG] for the new image; "" leaves it untagged
	Message     string // the history entry's comment
	Author      string // the config's and the history entry's author
	// Created is the new config's and history entry's time (zero: now).
	Created time.Time
	// CreatedBy is the history entry's created_by (default "strata commit").
	CreatedBy string
	Log       logrus.FieldLogger
}

// CommitResult says what Commit made.
type CommitResult struct {
	Image  *Image
	DiffID string
	Stats  LayerStats
	Size   int64 // bytes of the layer tar
	Reused bool  // the store had this layer already
}

// Commit turns a writable layer over base into a new image: the upper's
// changes become a layer tar (WriteLayer), hashed for its diffID and then
// ingested like an imported layer (extracted into staging, verified against
// that diffID, renamed into layers/ under the store lock); the new config is
// base's with the diffID appended to rootfs.diff_ids and a history entry;
// the image and the tag appear as an import's do. The upper is not changed.
func (s *Store) Commit(ctx context.Context, base *Image, o CommitOptions) (*CommitResult, error) {
	fail := func(err error) (*CommitResult, error) { return nil, fmt.Errorf("commit: %w", err) }
	var tag *parsedRef
	if o.Tag != "" {
		pr, err := parseTagRef(o.Tag)
		if err != nil {
			return fail(err)
		}
		tag = &pr
	}
	log := o.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	st, err := s.newStaging("commit")
	if err != nil {
		return fail(err)
	}
	defer st.Close()

	// 1. The layer tar, hashed while written.
	tarPath := filepath.Join(st.dir, "layer.tar")
	f, err := os.OpenFile(tarPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(err)
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	stats, err := WriteLayer(cw, UpperLayers{Upper: o.Upper, Work: o.Work, Lowers: s.LowerDirs(base)})
	if err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err != nil {
		return fail(err)
	}
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))
	res := &CommitResult{DiffID: diffID, Stats: *stats, Size: cw.n}

	// 2. Ingest it as an import would: extract into staging, verified.
	src := &source{format: "commit"}
	set, err := openDirSet(st.dir)
	if err != nil {
		return fail(err)
	}
	defer set.Close()
	newLayer := &layerSource{name: "layer.tar", diffID: diffID, size: -1, set: set}
	byKey := map[string]*layerJob{}
	var jobs []*layerJob
	img := &imageSource{desc: "commit"}
	for _, l := range base.Layers {
		ls := &layerSource{name: l.DiffID, diffID: l.DiffID, digest: l.Digest, size: -1}
		img.layers = append(img.layers, ls)
		byKey[l.DiffID] = &layerJob{key: l.DiffID, src: ls}
	}
	img.layers = append(img.layers, newLayer)
	if _, ok := byKey[diffID]; !ok {
		j := &layerJob{key: diffID, src: newLayer}
		if s.hasLayer(diffID) {
			res.Reused = true
			byKey[diffID] = j // planned as stored, like a reused import layer
		} else {
			dest := filepath.Join(st.dir, "layer-0")
			if err := os.Mkdir(dest, 0o700); err != nil {
				return fail(err)
			}
			eo := extractOptions{root0: Privileged(), warn: func(f string, a ...any) { log.Warnf(f, a...) }}
			if j.res, err = extractLayer(ctx, newLayer, dest, eo); err != nil {
				return fail(err)
			}
			byKey[diffID] = j
			jobs = append(jobs, j)
		}
	}

	// 3. The config: base's, plus the layer and its history entry.
	created := o.Created
	if created.IsZero() {
		created = time.Now()
	}
	created = created.UTC()
	if img.configJSON, err = commitConfig(base.ConfigJSON, diffID, created, o); err != nil {
		return fail(err)
	}
	img.id = sha256Hex(img.configJSON)
	src.images = []*imageSource{img}

	// 4. Layer, image and tag appear under the lock (the import's commit).
	ires := &ImportResult{}
	if err := s.commit(st, src, byKey, jobs, tag, ires, log); err != nil {
		return fail(err)
	}
	repos, err := s.loadRepos()
	if err != nil {
		return fail(err)
	}
	if res.Image, err = s.loadImage(img.id, repos); err != nil {
		return fail(err)
	}
	return res, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// commitConfig appends a layer to a config, keeping every field it does not
// know as it is.
func commitConfig(baseJSON []byte, diffID string, created time.Time, o CommitOptions) ([]byte, error) {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(baseJSON, &cfg); err != nil {
		return nil, fmt.Errorf("base config: %w", err)
	}
	var rootfs struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	if r, ok := cfg["rootfs"]; ok {
		if err := json.Unmarshal(r, &rootfs); err != nil {
			return nil, fmt.Errorf("base config: rootfs: %w", err)
		}
	}
	rootfs.Type = "layers"
	rootfs.DiffIDs = append(rootfs.DiffIDs, diffID)
	var hist []json.RawMessage
	if h, ok := cfg["history"]; ok {
		if err := json.Unmarshal(h, &hist); err != nil {
			return nil, fmt.Errorf("base config: history: %w", err)
		}
	}
	by := o.CreatedBy
	if by == "" {
		by = "strata commit"
	}
	entry, err := marshalNoEscape(v1.History{Created: v1.Time{Time: created}, CreatedBy: by, Author: o.Author, Comment: o.Message})
	if err != nil {
		return nil, err
	}
	hist = append(hist, entry)
	set := func(k string, v any) {
		if err == nil {
			cfg[k], err = marshalNoEscape(v)
		}
	}
	set("rootfs", rootfs)
	set("history", hist)
	set("created", created.Format(time.RFC3339Nano))
	if o.Author != "" {
		set("author", o.Author)
	}
	if err != nil {
		return nil, err
	}
	return marshalNoEscape(cfg) // keys sorted: deterministic
}

// marshalNoEscape is json.Marshal without HTML escaping ("a > b" stays).
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
