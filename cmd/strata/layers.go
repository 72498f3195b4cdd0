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

var layersFlags struct {
	format string
	eff    efficiencyFlags // --efficiency and its CI gates (efficiency.go)
}

func init() {
	register(&command{
		name:    "layers",
		usage:   "layers REF [--format table|json] [--efficiency [--ci --lowest-efficiency 0.9]]",
		summary: "list an image's layers, top-most first",
		flags: func(fs *pflag.FlagSet) {
			addFormatFlag(fs, &layersFlags.format)
			layersFlags.eff.add(fs)
		},
		run: runLayers,
	})
}

type layerRow struct {
	DiffID    string    `json:"diff_id"`
	Digest    string    `json:"digest,omitempty"`
	Size      int64     `json:"size"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
	Dir       string    `json:"dir"`
}

func runLayers(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need exactly one REF"}
	}
	if err := checkFormat(layersFlags.format); err != nil {
		return err
	}
	s, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	img, err := s.Resolve(args[0])
	if err != nil {
		return err
	}
	if layersFlags.eff.on {
		return runEfficiency(s, img, layersFlags.format, &layersFlags.eff)
	}
	var rows []layerRow
	for i := len(img.Layers) - 1; i >= 0; i-- {
		l := img.Layers[i]
		rows = append(rows, layerRow{DiffID: l.DiffID, Digest: l.Digest, Size: l.Size, Created: l.Created, CreatedBy: l.CreatedBy, Dir: l.Dir})
	}
	if layersFlags.format == "json" {
		if rows == nil {
			rows = []layerRow{}
		}
		return printJSON(rows)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tSIZE\tCREATED\tCREATED BY")
	for _, r := range rows {
		by := strings.ReplaceAll(r.CreatedBy, "\n", " ")
		if len(by) > 60 {
			by = by[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", layerstore.ShortID(r.DiffID), humanSize(r.Size), humanAgo(r.Created), by)
	}
	return tw.Flush()
}
