package main

import (
	"fmt"

	"github.com/strata-fs/strata/layerstore"
)

func init() {
	register(&command{
		name:    "rmi",
		usage:   "rmi REF...",
		summary: "untag images; delete an image when no tag is left (refused while mounted)",
		run: func(g *globals, args []string) error {
			if len(args) == 0 {
				return usageError{"need at least one REF"}
			}
			s, err := layerstore.Open(g.root)
			if err != nil {
				return err
			}
			for _, ref := range args {
				res, err := s.Remove(ref)
				if err != nil {
					return err
				}
				for _, u := range res.Untagged {
					fmt.Printf("Untagged: %s\n", u)
				}
				if res.Deleted != "" {
					fmt.Printf("Deleted: sha256:%s\n", res.Deleted)
				}
			}
			return nil
		},
	})
}
