package main

import (
	"fmt"
	"os"
)

// isOverlayInvocation reports whether args are the fuse-overlayfs style
// "strata -o lowerdir=...,upperdir=...,workdir=... DIR" with no subcommand.
func isOverlayInvocation(args []string) bool {
	for _, a := range args {
		if a == "-o" || (len(a) > 2 && a[:2] == "-o") {
			return true
		}
	}
	return false
}

func runOverlayCompat(args []string) int {
	fmt.Fprintln(os.Stderr, "strata: -o mode is not built yet")
	return 1
}
