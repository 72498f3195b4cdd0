package main

import (
	"syscall"
	"testing"
)

func TestParseImagePath(t *testing.T) {
	for _, tc := range []struct{ in, ref, path string }{
		{"busybox", "busybox", "/"},
		{"busybox:/etc", "busybox", "/etc"},
		{"busybox:latest:/etc/passwd", "busybox:latest", "/etc/passwd"},
		{"localhost:5000/app:1.0:/usr", "localhost:5000/app:1.0", "/usr"},
		{"app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef:/x", "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "/x"},
		{"localhost:5000/app", "localhost:5000/app", "/"},
	} {
		ref, p := parseImagePath(tc.in)
		if ref != tc.ref || p != tc.path {
			t.Errorf("%s: %q %q, want %q %q", tc.in, ref, p, tc.ref, tc.path)
		}
	}
}

func TestModeString(t *testing.T) {
	for _, tc := range []struct {
		mode uint32
		want string
	}{
		{syscall.S_IFREG | 0o644, "-rw-r--r--"},
		{syscall.S_IFDIR | 0o2775, "drwxrwsr-x"},
		{syscall.S_IFDIR | 0o1777, "drwxrwxrwt"},
		{syscall.S_IFREG | 0o4755, "-rwsr-xr-x"},
		{syscall.S_IFREG | 0o4644, "-rwSr--r--"},
		{syscall.S_IFLNK | 0o777, "lrwxrwxrwx"},
		{syscall.S_IFCHR | 0o666, "crw-rw-rw-"},
		{syscall.S_IFBLK | 0o660, "brw-rw----"},
		{syscall.S_IFIFO | 0o600, "prw-------"},
		{syscall.S_IFREG, "----------"},
	} {
		if got := modeString(tc.mode); got != tc.want {
			t.Errorf("%o: %s, want %s", tc.mode, got, tc.want)
		}
	}
}
