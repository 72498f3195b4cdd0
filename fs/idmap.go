package fs

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// IDRange maps Size ids starting at Container (as the layers hold them, on
// disk or in the OverrideXattr) to ids starting at Host (as the mount
// presents them).
type IDRange struct {
	Container, Host, Size uint32
}

// IDMap is a list of ranges with the semantics of fuse-overlayfs'
// uidmapping=/gidmapping= options: an id the layers hold is presented as
// Host+(id-Container) by the first range that holds it, and an id a caller
// gives (chown, the owner of a new file) is recorded the other way round. An
// id no range holds becomes the kernel's overflow id (65534). A nil IDMap is
// the identity.
type IDMap []IDRange

// ParseIDMap parses "CONTAINER:HOST:SIZE[:CONTAINER:HOST:SIZE...]", the
// fuse-overlayfs option syntax; ranges may also be separated by commas.
func ParseIDMap(s string) (IDMap, error) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == ',' })
	if len(f) == 0 || len(f)%3 != 0 {
		return nil, fmt.Errorf("id mapping %q: want CONTAINER:HOST:SIZE[:CONTAINER:HOST:SIZE...]", s)
	}
	var m IDMap
	for i := 0; i < len(f); i += 3 {
		var v [3]uint32
		for j := range v {
			n, err := strconv.ParseUint(f[i+j], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("id mapping %q: %q is not an id", s, f[i+j])
			}
			v[j] = uint32(n)
		}
		if v[2] == 0 || uint64(v[0])+uint64(v[2]) > 1<<32 || uint64(v[1])+uint64(v[2]) > 1<<32 {
			return nil, fmt.Errorf("id mapping %q: range %d:%d:%d is empty or overflows", s, v[0], v[1], v[2])
		}
		m = append(m, IDRange{Container: v[0], Host: v[1], Size: v[2]})
	}
	return m, nil
}

func (m IDMap) String() string {
	var b strings.Builder
	for i, r := range m {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%d:%d:%d", r.Container, r.Host, r.Size)
	}
	return b.String()
}

// ToHost maps an id the layers hold to the id the mount shows.
func (m IDMap) ToHost(id uint32, overflow uint32) uint32 {
	if m == nil {
		return id
	}
	for _, r := range m {
		if id >= r.Container && id-r.Container < r.Size {
			return r.Host + (id - r.Container)
		}
	}
	return overflow
}

// ToContainer maps an id the mount shows (a caller's) to the id recorded.
func (m IDMap) ToContainer(id uint32, overflow uint32) uint32 {
	if m == nil {
		return id
	}
	for _, r := range m {
		if id >= r.Host && id-r.Host < r.Size {
			return r.Container + (id - r.Host)
		}
	}
	return overflow
}

// IDMapping is how a mount translates owners between its layers and what it
// presents: fuse-overlayfs' uidmapping=, gidmapping=, squash_to_root,
// squash_to_uid= and squash_to_gid=.
type IDMapping struct {
	UID, GID IDMap
	// SquashToRoot presents every owner as 0:0; SquashUID and SquashGID
	// (when set) present every owner as that id, and take precedence.
	// Squashing changes only what is presented: owners callers set are
	// recorded through UID and GID.
	SquashToRoot         bool
	SquashUID, SquashGID *uint32
}

// Identity reports whether the mapping changes nothing.
func (m IDMapping) Identity() bool {
	return m.UID == nil && m.GID == nil && !m.SquashToRoot && m.SquashUID == nil && m.SquashGID == nil
}

func (m IDMapping) String() string {
	var parts []string
	if m.UID != nil {
		parts = append(parts, "uidmapping="+m.UID.String())
	}
	if m.GID != nil {
		parts = append(parts, "gidmapping="+m.GID.String())
	}
	if m.SquashToRoot {
		parts = append(parts, "squash_to_root")
	}
	if m.SquashUID != nil {
		parts = append(parts, fmt.Sprintf("squash_to_uid=%d", *m.SquashUID))
	}
	if m.SquashGID != nil {
		parts = append(parts, fmt.Sprintf("squash_to_gid=%d", *m.SquashGID))
	}
	return strings.Join(parts, ",")
}

// overflowIDs are the ids the kernel shows for unmapped ones.
var overflowUID, overflowGID = readOverflow("uid"), readOverflow("gid")

func readOverflow(kind string) uint32 {
	b, err := os.ReadFile("/proc/sys/kernel/overflow" + kind)
	if err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			return uint32(n)
		}
	}
	return 65534
}

// presentUID maps an id the layers hold to the one the mount shows.
func (m *IDMapping) presentUID(id uint32) uint32 {
	switch {
	case m.SquashUID != nil:
		return *m.SquashUID
	case m.SquashToRoot:
		return 0
	}
	return m.UID.ToHost(id, overflowUID)
}

func (m *IDMapping) presentGID(id uint32) uint32 {
	switch {
	case m.SquashGID != nil:
		return *m.SquashGID
	case m.SquashToRoot:
		return 0
	}
	return m.GID.ToHost(id, overflowGID)
}

// present applies the mapping to the owner of out.
func (m *IDMapping) present(out *fuse.Attr) {
	out.Uid, out.Gid = m.presentUID(out.Uid), m.presentGID(out.Gid)
}

// diskUID maps a caller's uid to the one recorded in the layer.
func (m *IDMapping) diskUID(id uint32) uint32 { return m.UID.ToContainer(id, overflowUID) }

// diskGID maps a caller's gid to the one recorded in the layer.
func (m *IDMapping) diskGID(id uint32) uint32 { return m.GID.ToContainer(id, overflowGID) }
