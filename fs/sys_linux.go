package fs

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Every access to a layer goes through a directory fd that was itself opened
// beneath the layer's root without following symlinks, plus one final name
// that never contains a slash and is never followed. These helpers keep that
// rule in one place.

// openBeneath opens path below root, refusing symlinks and escapes.
func openBeneath(root int, path string, flags int) (int, error) {
	if path == "" || path == "/" {
		path = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(root, path, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// openDirAt opens the directory name inside dirfd (no symlink followed).
func openDirAt(dirfd int, name string) (int, error) {
	return retryEINTR(func() (int, error) {
		return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		fd, err := f()
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func lstatAt(dirfd int, name string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

// procPath names the entry name inside the directory held by dirfd through
// /proc, for the xattr calls that have no *at form. The magic link resolves to
// our own held directory; name is a single component and the l* calls do not
// follow it.
func procPath(dirfd int, name string) string {
	if name == "" {
		return "/proc/self/fd/" + strconv.Itoa(dirfd)
	}
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// getxattrAt reads an xattr of dirfd/name (name == "" means dirfd itself).
func getxattrAt(dirfd int, name, attr string, dest []byte) (int, error) {
	if name == "" {
		return unix.Fgetxattr(dirfd, attr, dest)
	}
	return unix.Lgetxattr(procPath(dirfd, name), attr, dest)
}

func setxattrAt(dirfd int, name, attr string, data []byte, flags int) error {
	if name == "" {
		return unix.Fsetxattr(dirfd, attr, data, flags)
	}
	return unix.Lsetxattr(procPath(dirfd, name), attr, data, flags)
}

func removexattrAt(dirfd int, name, attr string) error {
	if name == "" {
		return unix.Fremovexattr(dirfd, attr)
	}
	return unix.Lremovexattr(procPath(dirfd, name), attr)
}

func listxattrAt(dirfd int, name string, dest []byte) (int, error) {
	if name == "" {
		return unix.Flistxattr(dirfd, dest)
	}
	return unix.Llistxattr(procPath(dirfd, name), dest)
}

// getxattrAll reads a whole xattr value, growing the buffer as needed.
func getxattrAll(dirfd int, name, attr string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := getxattrAt(dirfd, name, attr, buf)
		if err == unix.ERANGE {
			sz, err2 := getxattrAt(dirfd, name, attr, nil)
			if err2 != nil {
				return nil, err2
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// listxattrAll lists xattr names of dirfd/name.
func listxattrAll(dirfd int, name string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := listxattrAt(dirfd, name, buf)
		if err == unix.ERANGE {
			sz, err2 := listxattrAt(dirfd, name, nil)
			if err2 != nil {
				return nil, err2
			}
			buf = make([]byte, sz+256)
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

// isWhiteout reports whether st is an overlay whiteout (char device 0/0).
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// toErrno maps an error to the errno the kernel should see.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}

func tmpName(prefix string, n uint64) string {
	return fmt.Sprintf("#strata-%s-%x", prefix, n)
}
