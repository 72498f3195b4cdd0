// Command strata mounts container images as union filesystems.
package main

import "os"

func main() {
	catchSignalsEarly()
	os.Exit(run(os.Args[1:]))
}
