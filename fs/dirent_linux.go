package fs

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

type rawDirent struct {
	name string
	ino  uint64
	typ  uint8 // DT_*
}

// readDirents lists the directory held by dirfd (a fresh open file
// description is used, so concurrent listings of one fd never interfere).
func readDirents(dirfd int) ([]rawDirent, error) {
	fd, err := openDirAt(dirfd, ".")
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []rawDirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		b := buf[:n]
		for len(b) > 0 {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			if len(b) < 19 {
				break
			}
			ino := binary.NativeEndian.Uint64(b[0:8])
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			typ := b[18]
			nameb := b[19:reclen]
			l := 0
			for l < len(nameb) && nameb[l] != 0 {
				l++
			}
			name := string(nameb[:l])
			b = b[reclen:]
			if name == "." || name == ".." {
				continue
			}
			out = append(out, rawDirent{name: name, ino: ino, typ: typ})
		}
	}
}

func readNames(dirfd int) ([]string, error) {
	ents, err := readDirents(dirfd)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.name
	}
	return names, nil
}

// removeAllAt removes dirfd/name and everything below it without following
// symlinks.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	sub, err := openDirAt(dirfd, name)
	if err != nil {
		return err
	}
	names, err := readNames(sub)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(sub, n); err != nil {
				break
			}
		}
	}
	unix.Close(sub)
	if err != nil {
		return err
	}
	err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if err == unix.ENOENT {
		return nil
	}
	return err
}
