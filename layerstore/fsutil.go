package layerstore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// durable turns the fsync/syncfs calls on; only the fuzz target turns it
// off, to spend its time on parsing rather than on the disk.
var durable = true

func fsync(f *os.File) error {
	if !durable {
		return nil
	}
	return f.Sync()
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory: write, fsync, rename, fsync the directory. Readers see the old
// content or the new, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := fsync(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return fsync(d)
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// removeAll removes a tree. It works on trees with unwritable directories
// (mode 0500, 0000) when not running as root by making them writable first.
// os.RemoveAll itself works with *at calls and never follows symlinks.
func removeAll(path string) error {
	err := os.RemoveAll(path)
	if err == nil || os.Geteuid() == 0 {
		return err
	}
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = unix.Fchmodat(unix.AT_FDCWD, p, 0o700, 0)
		}
		return nil
	})
	return os.RemoveAll(path)
}

// lockFile takes an exclusive flock on path (created if missing). With
// nonBlocking it fails with unix.EWOULDBLOCK instead of waiting.
func lockFile(path string, nonBlocking bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_EX
	if nonBlocking {
		how |= unix.LOCK_NB
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// staging is a private directory under root/tmp. While it is in use, the
// sibling file NAME.lock is flock'ed; a staging directory whose lock can be
// taken belongs to a process that is gone and may be removed.
type staging struct {
	dir  string
	lock *os.File
}

func (s *Store) newStaging(kind string) (*staging, error) {
	name := kind + "-" + randomID()
	lockPath := filepath.Join(s.root, "tmp", name+".lock")
	lk, err := lockFile(lockPath, false)
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	// Between our create and our flock, another command's cleanTmp can
	// take the new lock, find no staging dir yet and remove the lock file:
	// ours would then lock an unlinked file, and the next cleanTmp would
	// take the staging dir for a leftover and delete it under us (seen
	// with three concurrent imports). Hold the lock only on the file that
	// is still there.
	var held, onDisk unix.Stat_t
	if err := unix.Fstat(int(lk.Fd()), &held); err != nil {
		lk.Close()
		return nil, fmt.Errorf("staging: %w", err)
	}
	if err := unix.Stat(lockPath, &onDisk); err != nil || onDisk.Ino != held.Ino || onDisk.Dev != held.Dev {
		lk.Close()
		return s.newStaging(kind)
	}
	dir := filepath.Join(s.root, "tmp", name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		lk.Close()
		os.Remove(lk.Name())
		return nil, fmt.Errorf("staging: %w", err)
	}
	return &staging{dir: dir, lock: lk}, nil
}

// Close removes the staging directory, then its lock file.
func (st *staging) Close() error {
	err := removeAll(st.dir)
	os.Remove(st.lock.Name())
	st.lock.Close()
	return err
}

// stagingInUse says whether a live import or pull holds a staging lock.
func (s *Store) stagingInUse() (bool, error) {
	tmp := filepath.Join(s.root, "tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		lk, err := lockFile(filepath.Join(tmp, e.Name()), true)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // finished meanwhile
			}
			return true, nil
		}
		lk.Close()
	}
	return false, nil
}

// cleanTmp removes staging directories left by processes that died.
func (s *Store) cleanTmp() (removed int, err error) {
	tmp := filepath.Join(s.root, "tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".lock") {
			base := strings.TrimSuffix(n, ".lock")
			lk, err := lockFile(filepath.Join(tmp, n), true)
			if err != nil {
				continue // in use
			}
			if _, err := os.Lstat(filepath.Join(tmp, base)); err == nil {
				if err := removeAll(filepath.Join(tmp, base)); err == nil {
					removed++
				}
			}
			os.Remove(lk.Name())
			lk.Close()
			continue
		}
		if _, err := os.Lstat(filepath.Join(tmp, n+".lock")); errors.Is(err, fs.ErrNotExist) {
			// A staging dir is created after its lock and removed
			// before it: without a lock it is a leftover.
			if err := removeAll(filepath.Join(tmp, n)); err == nil {
				removed++
			}
		}
	}
	return removed, nil
}
