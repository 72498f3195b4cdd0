package main

import "github.com/strata-fs/strata/layerstore"

func init() {
	register(&command{
		name:    "tag",
		usage:   "tag REF NAME[:TAG]",
		summary: "give an image another name",
		run: func(g *globals, args []string) error {
			if len(args) != 2 {
				return usageError{"need REF and NAME[:TAG]"}
			}
			s, err := layerstore.Open(g.root)
			if err != nil {
				return err
			}
			return s.Tag(args[0], args[1])
		},
	})
}
