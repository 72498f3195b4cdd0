package layerstore

import (
	"archive/tar"
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// extractUnprivileged extracts a layer as a daemon without privileges does
// (whatever the test runs as: the extractor is told it has none).
func extractUnprivileged(t *testing.T, layer []byte) string {
	t.Helper()
	dest := t.TempDir()
	src := &layerSource{name: "test", size: -1, set: bytesSet(layer)}
	if _, err := extractLayer(context.Background(), src, dest, extractOptions{root0: false, maxRatio: 1000, floor: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dest, "diff")
}

func xattrOf(t *testing.T, p, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// Without privileges the image's owners, modes (setuid included), devices,
// fifos and privileged xattrs are recorded in the containers/storage
// rootless format; the files on disk stay readable by their owner.
func TestExtractUnprivilegedRecordsOverride(t *testing.T) {
	owned := func(e ent, uid, gid int) ent { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }
	dev := func(name string, typ byte, maj, min int64, mode int64) ent {
		return owned(ent{hdr: tar.Header{Name: name, Typeflag: typ, Devmajor: maj, Devminor: min, Mode: mode, ModTime: time.Unix(1000, 0)}}, 0, 5)
	}
	capab := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	suid := owned(file("bin/suid", "binary", 0o4755), 0, 0)
	suid.hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": capab, "SCHILY.xattr.user.a": "1"}
	faked := file("faked", "x", 0o644)
	faked.hdr.PAXRecords = map[string]string{"SCHILY.xattr." + OverrideXattr: "0:0:04755"}
	layer := mkTar(t,
		owned(dir("home/user", 0o700), 1000, 1000),
		owned(file("home/user/secret", "s", 0o000), 1000, 1000),
		suid,
		dev("dev/null", tar.TypeChar, 1, 3, 0o666),
		dev("dev/loop0", tar.TypeBlock, 7, 0, 0o660),
		dev("fifo", tar.TypeFifo, 0, 0, 0o640),
		faked,
		file(".wh.gone", "", 0o600),
	)
	d := extractUnprivileged(t, layer)
	for _, tc := range []struct{ path, want string }{
		{"", "0:0:0755:dir"}, // implied root
		{"home", "0:0:0755:dir"},
		{"home/user", "1000:1000:0700:dir"},
		{"home/user/secret", "1000:1000:00:file"},
		{"bin/suid", "0:0:04755:file"},
		{"dev/null", "0:5:0666:char-1-3"},
		{"dev/loop0", "0:5:0660:block-7-0"},
		{"fifo", "0:5:0640:pipe"},
		{"faked", "0:0:0644:file"}, // a layer cannot bring its own override
	} {
		if got := xattrOf(t, filepath.Join(d, tc.path), OverrideXattr); got != tc.want {
			t.Errorf("%s: override %q, want %q", tc.path, got, tc.want)
		}
	}
	var st unix.Stat_t
	unix.Lstat(filepath.Join(d, "home/user/secret"), &st)
	if st.Mode&0o7777 != 0o600 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("secret on disk: mode %o, want a regular file 0600", st.Mode)
	}
	unix.Lstat(filepath.Join(d, "bin/suid"), &st)
	if st.Mode&0o7000 != 0 {
		t.Errorf("bin/suid on disk keeps special bits: %o", st.Mode)
	}
	unix.Lstat(filepath.Join(d, "dev/null"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		t.Errorf("dev/null on disk: mode %o size %d, want an empty regular file", st.Mode, st.Size)
	}
	if got := xattrOf(t, filepath.Join(d, "bin/suid"), "user.containers.override_security.capability"); got != capab {
		t.Errorf("security.capability not kept as user.containers.override_security.capability: %q", got)
	}
	if got := xattrOf(t, filepath.Join(d, "bin/suid"), "user.a"); got != "1" {
		t.Errorf("user.a = %q", got)
	}
	unix.Lstat(filepath.Join(d, "gone"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
}

// WriteLayer turns an unprivileged upper back into what the image means.
func TestWriteLayerAppliesOverride(t *testing.T) {
	layer := mkTar(t,
		file("f", "x", 0o644),
		file("dev-null", "", 0o600),
		file("pipe", "", 0o600),
	)
	d := extractUnprivileged(t, layer)
	set := func(p, v string) {
		if err := unix.Lsetxattr(filepath.Join(d, p), OverrideXattr, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	set("f", "1000:1001:04711:file")
	set("dev-null", "0:0:0666:char-1-3")
	set("pipe", "5:6:0640:pipe")
	if err := unix.Lsetxattr(filepath.Join(d, "f"), "user.containers.override_security.capability", []byte("cap"), 0); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := WriteLayer(&buf, UpperLayers{Upper: d}); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	got := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got[h.Name] = h
	}
	if h := got["f"]; h == nil || h.Uid != 1000 || h.Gid != 1001 || h.Mode != 0o4711 || h.PAXRecords["SCHILY.xattr.security.capability"] != "cap" {
		t.Errorf("f: %+v", h)
	} else if _, ok := h.PAXRecords["SCHILY.xattr."+OverrideXattr]; ok {
		t.Errorf("f: the override record itself is in the layer")
	}
	if h := got["dev-null"]; h == nil || h.Typeflag != tar.TypeChar || h.Devmajor != 1 || h.Devminor != 3 || h.Mode != 0o666 {
		t.Errorf("dev-null: %+v", h)
	}
	if h := got["pipe"]; h == nil || h.Typeflag != tar.TypeFifo || h.Uid != 5 || h.Mode != 0o640 {
		t.Errorf("pipe: %+v", h)
	}
}
