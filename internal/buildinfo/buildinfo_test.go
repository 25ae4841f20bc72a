package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"no vcs stamp", []debug.BuildSetting{{Key: "GOOS", Value: "linux"}}, "devel"},
		{"clean", []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "false"}}, "0123456789ab"},
		{"modified", []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}, {Key: "vcs.revision", Value: "fedcba9876543210fedcba9876543210fedcba98"}}, "fedcba987654-dirty"},
		{"short revision", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}, "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromSettings(tc.settings); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// git runs git in the repository, or skips the test outside a checkout.
func git(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", "../.."}, args...)...).Output()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("git %v: %v", args, err)
		}
		t.Skipf("not a git checkout: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestMakeBuildReportsGitDescribe builds the binaries the way `make build`
// does and checks that each reports `git describe --tags --always --dirty`.
func TestMakeBuildReportsGitDescribe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	want := git(t, "describe", "--tags", "--always", "--dirty")
	bin := t.TempDir()
	if out, err := exec.Command("make", "-C", "../..", "--no-print-directory", "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	for _, c := range []struct{ bin, want string }{
		{"keygate-sidecar", "keygate-sidecar " + want + "\n"},
		{"keygate", "keygate " + want + " (plugin version "},
	} {
		out, err := exec.Command(filepath.Join(bin, c.bin), "--version").Output()
		if err != nil || !strings.HasPrefix(string(out), c.want) {
			t.Errorf("%s --version: %q, %v; want it to start %q", c.bin, out, err, c.want)
		}
	}
}

// TestGoBuildReportsRevision: without make's stamp, a plain `go build` in
// the checkout reports the commit it was built from.
func TestGoBuildReportsRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	head := git(t, "rev-parse", "HEAD")
	if fi, err := os.Stat("../../.git"); err != nil || !fi.IsDir() {
		t.Skip("a git worktree (.git is a file): the go command records no VCS stamp there")
	}
	bin := filepath.Join(t.TempDir(), "keygate-sidecar")
	// -buildvcs=true: GOFLAGS may turn the stamp off (it does on CI's machines).
	if out, err := exec.Command("go", "build", "-C", "../..", "-buildvcs=true", "-o", bin, "./cmd/keygate-sidecar").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "keygate-sidecar "+head[:12]) {
		t.Errorf("--version: %q, %v; want keygate-sidecar %s…", out, err, head[:12])
	}
}
