package main

import (
	"fmt"

	"github.com/strata-fs/strata/layerstore"
)

func init() {
	register(&command{
		name:    "gc",
		usage:   "gc",
		summary: "remove layers no image uses and leftovers of interrupted imports",
		run: func(g *globals, args []string) error {
			if len(args) != 0 {
				return usageError{"gc takes no arguments"}
			}
			s, err := layerstore.Open(g.root)
			if err != nil {
				return err
			}
			res, err := s.GC()
			if err != nil {
				return err
			}
			for _, l := range res.Layers {
				fmt.Printf("Deleted layer: %s\n", l)
			}
			fmt.Printf("Removed %d layers (%s), %d staging dirs\n", len(res.Layers), humanSize(res.Bytes), res.TmpRemoved)
			if res.KeptBusy > 0 {
				fmt.Printf("Kept %d unused layers: an import or pull is running (run gc again after it)\n", res.KeptBusy)
			}
			return nil
		},
	})
}
