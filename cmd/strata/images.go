package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

var imagesFlags struct{ format string }

func init() {
	register(&command{
		name:    "images",
		usage:   "images [--format table|json]",
		summary: "list images",
		flags:   func(fs *pflag.FlagSet) { addFormatFlag(fs, &imagesFlags.format) },
		run:     runImages,
	})
}

type imageRow struct {
	Repository  string    `json:"repository"`
	Tag         string    `json:"tag"`
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	Size        int64     `json:"size"`
	RepoTags    []string  `json:"repo_tags"`
	RepoDigests []string  `json:"repo_digests"`
}

func splitTag(ref string) (string, string) {
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i:], "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, "<none>"
}

func runImages(g *globals, args []string) error {
	if len(args) != 0 {
		return usageError{"images takes no arguments"}
	}
	if err := checkFormat(imagesFlags.format); err != nil {
		return err
	}
	s, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	imgs, err := s.Images()
	if err != nil {
		return err
	}
	var rows []imageRow
	for _, img := range imgs {
		base := imageRow{ID: "sha256:" + img.ID, Created: img.Created, Size: img.Size,
			RepoTags: append([]string{}, img.RepoTags...), RepoDigests: append([]string{}, img.RepoDigests...)}
		if len(img.RepoTags) == 0 {
			r := base
			r.Repository, r.Tag = "<none>", "<none>"
			rows = append(rows, r)
		}
		for _, t := range img.RepoTags {
			r := base
			r.Repository, r.Tag = splitTag(t)
			rows = append(rows, r)
		}
	}
	if imagesFlags.format == "json" {
		if rows == nil {
			rows = []imageRow{}
		}
		return printJSON(rows)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, r.Tag, layerstore.ShortID(r.ID), humanAgo(r.Created), humanSize(r.Size))
	}
	return tw.Flush()
}
