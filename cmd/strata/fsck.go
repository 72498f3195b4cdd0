package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

var fsckFlags struct{ deep bool }

func init() {
	register(&command{
		name:    "fsck",
		usage:   "fsck [--deep]",
		summary: "check the store: tags, images, layers, staging leftovers; --deep re-hashes every layer against its content manifest",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVar(&fsckFlags.deep, "deep", false, "compare each extracted layer with the content manifest written at import")
		},
		run: runFsck,
	})
}

// runFsck prints one line per problem on stdout and fails when there is
// any; a clean store gets one summary line.
func runFsck(g *globals, args []string) error {
	if len(args) != 0 {
		return usageError{"fsck takes no arguments"}
	}
	s, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	res, err := s.Fsck(layerstore.FsckOptions{Deep: fsckFlags.deep})
	if err != nil {
		return err
	}
	for _, p := range res.Problems {
		fmt.Println(p)
	}
	what := fmt.Sprintf("%d tags, %d images, %d layers", res.Tags, res.Images, res.Layers)
	if fsckFlags.deep {
		what += fmt.Sprintf(", %d files re-hashed", res.Files)
	}
	if len(res.Problems) > 0 {
		return fmt.Errorf("%d problems in %s (%s)", len(res.Problems), s.Root(), what)
	}
	fmt.Printf("fsck: %s: %s, no problems\n", s.Root(), what)
	return nil
}
