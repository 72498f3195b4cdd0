package main

import (
	"encoding/json"

	"github.com/strata-fs/strata/layerstore"
)

func init() {
	register(&command{
		name:    "inspect",
		usage:   "inspect REF",
		summary: "print an image's ID, tags, config and layer directories as JSON",
		run:     runInspect,
	})
}

type inspectLayer struct {
	DiffID    string `json:"diff_id"`
	Digest    string `json:"digest,omitempty"`
	Size      int64  `json:"size"`
	Dir       string `json:"dir"`
	CreatedBy string `json:"created_by,omitempty"`
}

type inspectOut struct {
	ID          string          `json:"id"`
	RepoTags    []string        `json:"repo_tags"`
	RepoDigests []string        `json:"repo_digests"`
	Created     string          `json:"created"`
	Size        int64           `json:"size"`
	Config      json.RawMessage `json:"config"`
	Layers      []inspectLayer  `json:"layers"`   // bottom-up, as rootfs.diff_ids
	LowerDir    string          `json:"lowerdir"` // overlayfs lowerdir= value, top-most first
}

func runInspect(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need exactly one REF"}
	}
	s, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	img, err := s.Resolve(args[0])
	if err != nil {
		return err
	}
	out := inspectOut{ID: "sha256:" + img.ID, RepoTags: img.RepoTags, RepoDigests: img.RepoDigests,
		Created: img.Created.UTC().Format("2006-01-02T15:04:05.999999999Z"), Size: img.Size, Config: img.ConfigJSON, Layers: []inspectLayer{}}
	if out.RepoTags == nil {
		out.RepoTags = []string{}
	}
	if out.RepoDigests == nil {
		out.RepoDigests = []string{}
	}
	for _, l := range img.Layers {
		out.Layers = append(out.Layers, inspectLayer{DiffID: l.DiffID, Digest: l.Digest, Size: l.Size, Dir: l.Dir, CreatedBy: l.CreatedBy})
	}
	for i, d := range s.LowerDirs(img) {
		if i > 0 {
			out.LowerDir += ":"
		}
		out.LowerDir += d
	}
	return printJSON(out)
}
