package main

import (
	"reflect"
	"testing"
)

func TestOverlayArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want bool
	}{
		{"plain -o", []string{"-o", "lowerdir=/a", "/mnt"}, true},
		{"joined -o", []string{"-olowerdir=/a", "/mnt"}, true},
		{"after global flags", []string{"--root", "/r", "-o", "lowerdir=/a", "/mnt"}, true},
		{"subcommand", []string{"mount", "img", "/mnt"}, false},
		{"global then subcommand", []string{"--root", "/r", "images"}, false},
	} {
		if got := isOverlayInvocation(tc.args); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
	if got := splitOptions(`lowerdir=/a\,b:/c,upperdir=/u,ro`); !reflect.DeepEqual(got, []string{`lowerdir=/a\,b:/c`, "upperdir=/u", "ro"}) {
		t.Errorf("splitOptions: %q", got)
	}
	if got := splitLowers(`/a\:1:/b::/c`); !reflect.DeepEqual(got, []string{"/a:1", "/b", "/c"}) {
		t.Errorf("splitLowers: %q", got)
	}
	oa, err := parseOverlayArgs([]string{"-o", "lowerdir=/l,upperdir=/u", "-o", "workdir=/w", "-f", "src", "/mnt"})
	if err != nil || oa.dir != "/mnt" || !oa.foreground || len(oa.opts) != 3 {
		t.Errorf("parse: %+v %v", oa, err)
	}
}
