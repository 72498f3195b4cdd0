//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoScript runs scripts/demo.sh (what `make demo` and the README
// promise) with the binary under test, so the demo cannot rot.
func TestDemoScript(t *testing.T) {
	requireCommands(t, "import", "images", "mount", "umount")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "STRATA="+strataBin, "STRATA_ROOT=")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("demo output:\n%s", out)
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v", err)
	}
	if !strings.Contains(string(out), "demo: OK") {
		t.Fatal("scripts/demo.sh did not reach its end")
	}
}
