package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// consoleTestDir holds the browser test of the owner console.
const consoleTestDir = "../examples/console-test"

// need finds what the browser test needs; in CI a missing piece is a
// failure (.ci/run installs it), elsewhere a skip.
func need(t *testing.T, what, hint string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing (.ci/run installs it): %s", what, hint)
	}
	t.Skipf("%s is missing: %s", what, hint)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestConsoleInBrowser runs examples/console-test/console.test.mjs: Debian's
// chromium, driven by playwright-core, uses the owner console through the
// gateway of the demo stack (kongemu with the real plugin, the sidecar, the
// example upstream) to create, reveal once, roll and revoke keys.
func TestConsoleInBrowser(t *testing.T) {
	s := startStack(t, withConsoleHandover) // as the demo runs it
	runConsoleTest(t, s)
}

// TestConsoleFragmentIgnoredByDefault: a sidecar started without
// --console-handover (any production configuration) serves a console that
// drops a token handed over in the URL fragment unread, so that a link
// cannot switch an owner's session to another's token (login CSRF).
func TestConsoleFragmentIgnoredByDefault(t *testing.T) {
	s := startStack(t, func(*stackOpts) {}) // a local stack of the default shape
	runConsoleTest(t, s, "CONSOLE_EXPECT_NO_HANDOVER=1")
}

// runConsoleTest runs console.test.mjs against s with extra environment.
func runConsoleTest(t *testing.T, s *stack, extra ...string) {
	t.Helper()
	node, err := exec.LookPath("node")
	need(t, "node", "apt-get install nodejs npm", err == nil)
	need(t, "/usr/bin/chromium", "apt-get install chromium", exists("/usr/bin/chromium"))
	need(t, "playwright-core", "cd examples/console-test && npm ci", exists(filepath.Join(consoleTestDir, "node_modules", "playwright-core", "package.json")))
	artifacts := os.Getenv("CONSOLE_ARTIFACTS")
	if artifacts == "" {
		artifacts, _ = filepath.Abs(filepath.Join(consoleTestDir, "artifacts"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.test.mjs")
	cmd.Dir = consoleTestDir
	owner := mintJWT("alice", workspace, "OWNER")
	cmd.Env = append(os.Environ(),
		"CONSOLE_GATEWAY_URL="+s.gateway,
		"CONSOLE_URL="+consoleURL(s.gateway, owner), // what `demo -keep` prints
		"CONSOLE_TOKEN="+owner,
		"CONSOLE_WORKSPACE="+workspace,
		"CONSOLE_PORTAL_CODE="+partnerCode,
		"CONSOLE_PORTAL=PARTNER",
		"CONSOLE_ARTIFACTS="+artifacts,
	)
	cmd.Env = append(cmd.Env, extra...)
	out, err := cmd.CombinedOutput()
	t.Logf("node console.test.mjs (screenshots in %s):\n%s", artifacts, out)
	if err != nil {
		t.Fatalf("browser test failed: %v (stack logs in %s)", err, s.dir)
	}
}
