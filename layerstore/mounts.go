package layerstore

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MountRecord is what the store remembers about a running mount, one file
// per mountpoint under root/mounts.
type MountRecord struct {
	Mountpoint string
	ImageID    string
	Ref        string
	Upper      string
	Work       string
	PID        int
	ReadOnly   bool
}

func (s *Store) mountFile(mountpoint string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(mountpoint)))
	return filepath.Join(s.root, "mounts", hex.EncodeToString(sum[:16])+".json")
}

// AddMount records a mount (replacing any record for the same mountpoint).
func (s *Store) AddMount(m MountRecord) error {
	if m.Mountpoint == "" {
		return fmt.Errorf("add mount: empty mountpoint")
	}
	m.Mountpoint = filepath.Clean(m.Mountpoint)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.mountFile(m.Mountpoint), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("add mount %s: %w", m.Mountpoint, err)
	}
	return nil
}

// RemoveMountIn forgets the record for mountpoint in the store at root
// without opening the store (Open makes its directories): a daemon that ends
// after its store was deleted must not bring it back.
func RemoveMountIn(root, mountpoint string) error {
	return (&Store{root: root}).RemoveMount(mountpoint)
}

// RemoveMount forgets the record for mountpoint; no record is not an error.
func (s *Store) RemoveMount(mountpoint string) error {
	err := os.Remove(s.mountFile(mountpoint))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove mount %s: %w", mountpoint, err)
	}
	return nil
}

// Mounts returns the live mount records. A record whose mountpoint is not a
// fuse.strata mount in /proc/self/mountinfo, or whose PID is dead, is
// removed and not returned.
func (s *Store) Mounts() ([]MountRecord, error) {
	dir := filepath.Join(s.root, "mounts")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("mounts: %w", err)
	}
	live, err := strataMountpoints()
	if err != nil {
		return nil, fmt.Errorf("mounts: %w", err)
	}
	var out []MountRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var m MountRecord
		if json.Unmarshal(b, &m) != nil || !live[m.Mountpoint] || !pidAlive(m.PID) {
			os.Remove(p)
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	if err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	// A daemon killed with SIGKILL stays a zombie until it is reaped, and
	// a zombie serves nothing: its mount is dead.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// mountinfoPath is a variable for tests.
var mountinfoPath = "/proc/self/mountinfo"

// strataMountpoints lists mountpoints of type fuse.strata.
func strataMountpoints() (map[string]bool, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		line := sc.Text()
		i := strings.Index(line, " - ")
		if i < 0 {
			continue
		}
		pre, post := strings.Fields(line[:i]), strings.Fields(line[i+3:])
		if len(pre) < 5 || len(post) < 1 {
			continue
		}
		if post[0] == "fuse.strata" {
			out[unescapeMountinfo(pre[4])] = true
		}
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
