package main

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	strfs "github.com/strata-fs/strata/fs"
)

// The daemon serves only what the handover carries: every field of the
// configuration must survive the trip, or the daemon would serve another
// mount than the one the command prepared.
func TestHandoverCarriesTheWholeConfig(t *testing.T) {
	uid, err := strfs.ParseIDMap("0:100000:65536")
	if err != nil {
		t.Fatal(err)
	}
	squash := uint32(1000)
	h := handover{
		Dir: "/mnt/x",
		Cfg: strfs.Config{
			Lowers: []string{"/l/a", "/l/b"}, Upper: "/u", Work: "/w", Log: logrus.New(),
			Rootless: true, EntryTimeout: time.Second, AttrTimeout: 2 * time.Second, NegativeTimeout: 3 * time.Second,
			NoPassthrough: true, NoSync: true, Volatile: true, OverrideStat: true, Raw: true,
			LayerInfo: []string{"layer 2/2 sha256:aa", "layer 1/2 sha256:bb"},
			IDs:       strfs.IDMapping{UID: uid, GID: uid, SquashToRoot: true, SquashUID: &squash},
		},
		Mount:     strfs.MountOptions{FsName: "strata:x", AllowOther: true, Dev: true, Suid: true, ReadOnly: true, Debug: true, Extra: []string{"a=b"}, FuseFd: 7},
		StoreRoot: "/var/lib/strata",
	}
	checkAllFieldsSet(t, reflect.ValueOf(h.Cfg), "Config")
	checkAllFieldsSet(t, reflect.ValueOf(h.Mount), "MountOptions")

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	var null [2]int
	if err := unix.Pipe2(null[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(null[0])
	defer unix.Close(null[1])

	payload, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(pair[0], []byte{'f'}, unix.UnixRights(null[0]), nil, 0); err != nil {
		t.Fatal(err)
	}
	// The rest in small pieces: the daemon must read until it has it all.
	go func() {
		for rest := payload; len(rest) > 0; {
			n := min(7, len(rest))
			unix.Write(pair[0], rest[:n])
			rest = rest[n:]
			time.Sleep(time.Millisecond)
		}
	}()
	fd, got, err := receiveMount(itoa(pair[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("received fd %d: %v, mode %o; want the pipe sent", fd, err, st.Mode)
	}
	sent := h
	sent.Cfg.Log = nil // the daemon's own logger replaces it
	if !reflect.DeepEqual(*got, sent) {
		t.Errorf("handover changed on the way:\nsent %+v\ngot  %+v", sent, *got)
	}
	answer := make([]byte, 1)
	if n, _ := unix.Read(pair[0], answer); n != 1 || answer[0] != 'r' {
		t.Errorf("the daemon's answer: %q, want \"r\"", answer[:n])
	}
}

// A command that gives up (closes its end) makes the daemon stop waiting.
func TestHandoverAbandoned(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[0])
	if _, _, err := receiveMount(itoa(pair[1])); err == nil {
		t.Fatal("receiveMount succeeded on an abandoned handover")
	}
}

func itoa(fd int) string { return strconv.Itoa(fd) }

// checkAllFieldsSet fails for an exported field left at its zero value, so
// that a field added to the type must be added to the test too.
func checkAllFieldsSet(t *testing.T, v reflect.Value, name string) {
	t.Helper()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if f.IsExported() && v.Field(i).IsZero() {
			t.Errorf("%s.%s is not set in this test: set it, so that the handover is checked for it", name, f.Name)
		}
	}
}
