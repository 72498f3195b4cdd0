package fs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests serve their mounts from the test process itself. A page fault
// on a mapping of a file the kernel must read from the daemon blocks its
// thread outside any syscall, so Go cannot hand its P to another thread; if
// a garbage collection then stops the world, nothing serves the READ and the
// process hangs for good. Mappings of mounted files are therefore read by a
// child process: this test binary, started with mmapReaderEnv set.
const mmapReaderEnv = "STRATA_TEST_MMAP_READER"

func TestMain(m *testing.M) {
	if path := os.Getenv(mmapReaderEnv); path != "" {
		if err := mmapReader(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// mmapReader maps path read-only and shared, prints the hash of the mapped
// data, waits for a line on stdin, then prints the hash of the mapping
// again, the size fstat gives and the hash of what pread returns through
// the same open file. A fault (SIGBUS past the end the kernel knows) kills
// it, which the parent sees.
func mmapReader(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	size := int(st.Size)
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(m)
	fmt.Printf("%s\n", sha(m))
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	mapped := sha(m)
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	buf := make([]byte, size+4096)
	k, err := unix.Pread(int(f.Fd()), buf, 0)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d %s\n", mapped, st.Size, sha(buf[:k]))
	return nil
}

// mappedReader is a child process holding a mapping of a mounted file.
type mappedReader struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
	first  string
}

// startMappedReader maps path in a child and returns once it has read the
// whole mapping; first is the hash of what it read.
func startMappedReader(t *testing.T, path string) *mappedReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mmapReaderEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &mappedReader{cmd: cmd, in: in, out: bufio.NewReader(outPipe), stderr: &stderr}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	line, err := r.out.ReadString('\n')
	if err != nil {
		cmd.Wait()
		t.Fatalf("mmap reader of %s: %v: %s", path, err, firstLine(stderr.String()))
	}
	r.first = strings.TrimSpace(line)
	return r
}

// again has the child read its mapping and its fd once more: the hash of
// the mapping, the fstat size and the hash of a pread of it all.
func (r *mappedReader) again() (mapped string, size int64, read string, err error) {
	if _, err := io.WriteString(r.in, "go\n"); err != nil {
		return "", 0, "", err
	}
	line, rerr := r.out.ReadString('\n')
	werr := r.cmd.Wait()
	if rerr != nil || werr != nil {
		return "", 0, "", fmt.Errorf("the reader died: %v: %s", werr, firstLine(r.stderr.String()))
	}
	_, err = fmt.Sscanf(line, "%s %d %s", &mapped, &size, &read)
	return mapped, size, read, err
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
