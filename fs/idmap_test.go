package fs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func TestParseIDMap(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     string
		err      bool
	}{
		{name: "one range", in: "0:1000:1", want: "0:1000:1"},
		{name: "two ranges colon", in: "0:1000:1:1:100000:65536", want: "0:1000:1:1:100000:65536"},
		{name: "two ranges comma", in: "0:1000:1,1:100000:65536", want: "0:1000:1:1:100000:65536"},
		{name: "short", in: "0:1000", err: true},
		{name: "not a number", in: "0:x:1", err: true},
		{name: "empty range", in: "0:1000:0", err: true},
		{name: "overflow", in: "4294967295:0:2", err: true},
		{name: "empty", in: "", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseIDMap(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("%q: err %v", tc.in, err)
			}
			if err == nil && m.String() != tc.want {
				t.Errorf("%q: %q, want %q", tc.in, m.String(), tc.want)
			}
		})
	}
}

// The direction is fuse-overlayfs': the first id of a range is the one the
// layers hold, the second the one presented.
func TestIDMapDirection(t *testing.T) {
	m, err := ParseIDMap("0:1000:1:1:100000:65536")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ layer, shown uint32 }{{0, 1000}, {1, 100000}, {1000, 100999}, {65536, 165535}} {
		if got := m.ToHost(tc.layer, 65534); got != tc.shown {
			t.Errorf("ToHost(%d) = %d, want %d", tc.layer, got, tc.shown)
		}
		if got := m.ToContainer(tc.shown, 65534); got != tc.layer {
			t.Errorf("ToContainer(%d) = %d, want %d", tc.shown, got, tc.layer)
		}
	}
	if got := m.ToHost(65537, 65534); got != 65534 {
		t.Errorf("unmapped layer id shown as %d, want the overflow id", got)
	}
	if got := m.ToContainer(5, 65534); got != 65534 {
		t.Errorf("unmapped caller id recorded as %d, want the overflow id", got)
	}
	var none IDMap
	if none.ToHost(7, 65534) != 7 || none.ToContainer(7, 65534) != 7 {
		t.Error("a nil map is not the identity")
	}
}

func TestSquash(t *testing.T) {
	uid, gid := uint32(7), uint32(8)
	for _, tc := range []struct {
		name     string
		m        IDMapping
		uid, gid uint32
	}{
		{name: "none", m: IDMapping{}, uid: 1, gid: 2},
		{name: "root", m: IDMapping{SquashToRoot: true}, uid: 0, gid: 0},
		{name: "uid over root", m: IDMapping{SquashToRoot: true, SquashUID: &uid}, uid: 7, gid: 0},
		{name: "uid and gid", m: IDMapping{SquashUID: &uid, SquashGID: &gid}, uid: 7, gid: 8},
		{name: "mapping", m: IDMapping{UID: IDMap{{1, 501, 1}}, GID: IDMap{{2, 502, 1}}}, uid: 501, gid: 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := fuse.Attr{Owner: fuse.Owner{Uid: 1, Gid: 2}}
			tc.m.present(&a)
			if a.Uid != tc.uid || a.Gid != tc.gid {
				t.Errorf("presented %d:%d, want %d:%d", a.Uid, a.Gid, tc.uid, tc.gid)
			}
		})
	}
}

// Owners are presented through the mapping, and owners callers give (chown,
// new files) are recorded through its reverse, with and without the
// override xattr.
func TestIDMappingMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mount)")
	}
	ids := IDMapping{UID: IDMap{{0, 1000, 1}, {1, 100000, 65536}}, GID: IDMap{{0, 2000, 1}, {1, 200000, 65536}}}
	for _, override := range []bool{false, true} {
		name := "chown"
		if override {
			name = "override"
		}
		t.Run(name, func(t *testing.T) {
			mnt, upper, _ := mountUnion(t, func(l []string) {
				f := filepath.Join(l[0], "f")
				os.WriteFile(f, []byte("x"), 0o644)
				os.Lchown(f, 0, 0)
				g := filepath.Join(l[0], "g")
				os.WriteFile(g, []byte("x"), 0o644)
				os.Lchown(g, 5, 6)
				if override {
					unix.Setxattr(g, OverrideXattr, []byte("5:6:0644"), 0)
				}
				h := filepath.Join(l[0], "unmapped")
				os.WriteFile(h, []byte("x"), 0o644)
				os.Lchown(h, 70000, 70000)
			}, 1, Config{OverrideStat: override, IDs: ids})
			owner := func(p string) (uint32, uint32) {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatal(err)
				}
				return st.Uid, st.Gid
			}
			if u, g := owner(filepath.Join(mnt, "f")); u != 1000 || g != 2000 {
				t.Errorf("f (0:0) shown as %d:%d, want 1000:2000", u, g)
			}
			if u, g := owner(filepath.Join(mnt, "g")); u != 100004 || g != 200005 {
				t.Errorf("g (5:6) shown as %d:%d, want 100004:200005", u, g)
			}
			if u, g := owner(filepath.Join(mnt, "unmapped")); u != overflowUID || g != overflowGID {
				t.Errorf("unmapped shown as %d:%d, want the overflow ids", u, g)
			}
			if err := os.Lchown(filepath.Join(mnt, "f"), 100041, 200042); err != nil {
				t.Fatal(err)
			}
			if u, g := owner(filepath.Join(mnt, "f")); u != 100041 || g != 200042 {
				t.Errorf("after chown: %d:%d", u, g)
			}
			var st unix.Stat_t
			unix.Lstat(filepath.Join(upper, "f"), &st)
			buf := make([]byte, 64)
			if override {
				n, err := unix.Lgetxattr(filepath.Join(upper, "f"), OverrideXattr, buf)
				if err != nil || string(buf[:n]) != "42:43:0644" {
					t.Errorf("upper override %q %v, want 42:43:0644", buf[:n], err)
				}
			} else if st.Uid != 42 || st.Gid != 43 {
				t.Errorf("upper owner %d:%d, want 42:43", st.Uid, st.Gid)
			}
		})
	}
}
