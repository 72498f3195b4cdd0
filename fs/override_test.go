package fs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseOverride(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  bool
	}{
		{in: "1000:1000:0640", want: "1000:1000:0640"},
		{in: "0:0:4755:file", want: "0:0:04755"},
		{in: "0:5:0666:char-1-3", want: "0:5:0666:char-1-3"},
		{in: "0:0:0660:block-8-0", want: "0:0:0660:block-8-0"},
		{in: "0:0:0644:pipe", want: "0:0:0644:pipe"},
		{in: "0:0", err: true},
		{in: "a:0:0644", err: true},
		{in: "0:0:0644:weird", err: true},
	} {
		o, err := parseOverride(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if err == nil && o.String() != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, o.String(), tc.want)
		}
	}
}

// The owners, modes and devices an unprivileged store keeps in
// user.containers.override_stat are what the mount shows, and changes
// through the mount are recorded the same way.
func TestOverrideStatPresentedAndRecorded(t *testing.T) {
	mnt, upper, _ := mountUnion(t, func(l []string) {
		f := filepath.Join(l[0], "owned")
		os.WriteFile(f, []byte("x"), 0o644)
		unix.Setxattr(f, OverrideXattr, []byte("1000:1001:0640"), 0)
		d := filepath.Join(l[0], "dev-null")
		os.WriteFile(d, nil, 0o600)
		unix.Setxattr(d, OverrideXattr, []byte("0:0:0666:char-1-3"), 0)
	}, 1, Config{OverrideStat: true})
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "owned"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o7777 != 0o640 {
		t.Errorf("owned: %d:%d %o", st.Uid, st.Gid, st.Mode)
	}
	unix.Lstat(filepath.Join(mnt, "dev-null"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev-null: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := os.Lchown(filepath.Join(mnt, "owned"), 42, 43); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(mnt, "owned"), 0o600); err != nil {
		t.Fatal(err)
	}
	unix.Lstat(filepath.Join(mnt, "owned"), &st)
	if st.Uid != 42 || st.Gid != 43 || st.Mode&0o7777 != 0o600 {
		t.Errorf("after chown/chmod: %d:%d %o", st.Uid, st.Gid, st.Mode)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(upper, "owned"), OverrideXattr, buf)
	if err != nil || string(buf[:n]) != "42:43:0600" {
		t.Errorf("upper override %q %v", buf[:n], err)
	}
	if n, _ := unix.Llistxattr(filepath.Join(mnt, "owned"), buf); n > 0 {
		t.Errorf("override xattr listed through the mount: %q", buf[:n])
	}
}
