// Package integration holds the tests that build the strata binary, import
// images made by real tools (../shared/fixtures), mount them for real and
// compare the result with the kernel's overlayfs and umoci's reference unpack.
//
// The tests carry the build tag "integration" so that a plain `go test ./...`
// never needs root; run them with `make test-integration` (or `sudo make test`).
// They skip with a message when not root or when /dev/fuse is missing.
package integration
