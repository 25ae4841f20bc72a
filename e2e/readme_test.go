package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's shell blocks that a newcomer pastes are run here, so the
// README cannot drift from what works:
//
//	<!-- readme-test: hand-session -->     TestDemoKeepSession
//	<!-- readme-test: audit-events -->     TestDemoKeepSession, after the session
//	<!-- readme-test: sidecar-direct -->   TestReadmeSidecarDirect

// readmeBlock returns the fenced shell block of README.md between
// "<!-- readme-test: name -->" and "<!-- /readme-test -->".
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "<!-- readme-test: "+name+" -->\n")
	if !ok {
		t.Fatalf("README.md has no <!-- readme-test: %s --> marker", name)
	}
	block, _, ok := strings.Cut(rest, "<!-- /readme-test -->")
	if !ok {
		t.Fatalf("README.md: readme-test %s is not closed", name)
	}
	body, ok := strings.CutPrefix(block, "```sh\n")
	if !ok || !strings.HasSuffix(body, "```\n") {
		t.Fatalf("README.md: readme-test %s must hold exactly one ```sh block:\n%s", name, block)
	}
	return strings.TrimSuffix(body, "```\n")
}

var httpStatus = regexp.MustCompile(`(?m)^HTTP (\d{3})$`)

// statuses lists the "HTTP nnn" lines curl's -w printed, in order.
func statuses(out string) []int {
	var got []int
	for _, m := range httpStatus.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		got = append(got, n)
	}
	return got
}

// runBash runs script with bash in dir, in a process group of its own that
// is killed when the test ends (a sidecar the script leaves behind
// included).
func runBash(t *testing.T, dir, script string, env []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return string(out)
}

// cleanEnv is the test's environment without any KEYGATE_ variable, as in
// a fresh shell.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KEYGATE_") })
}

// TestDemoKeepSession runs `demo -keep`, pastes the lines it prints into
// bash as a newcomer would, and checks that a key was created, used through
// the gateway and revoked; and that the README shows the same session.
func TestDemoKeepSession(t *testing.T) {
	if external {
		t.Skip("runs the demo's own stack")
	}
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-C", repo, "-o", bin, "./examples/demo").CombinedOutput(); err != nil {
		t.Fatalf("go build demo: %v\n%s", err, out)
	}
	demo := exec.Command(bin, "-keep", "-repo", repo)
	demo.Env = cleanEnv()
	stdout, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	demo.Stderr = &stderr
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Ctrl-C, as the README says: the demo stops what it started.
		demo.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { demo.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			demo.Process.Kill()
			t.Errorf("demo did not stop within 20 s of SIGINT")
		}
	})

	// Read up to the end of the block; the demo then waits for Ctrl-C.
	lines := make(chan []string, 1)
	go func() {
		var block []string
		in := false
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "----- paste from here -----":
				in = true
			case line == "----- to here -----":
				lines <- block
				for sc.Scan() { // keep draining so the demo never blocks
				}
				return
			case in:
				block = append(block, line)
			}
		}
		lines <- nil
	}()
	var block []string
	select {
	case block = <-lines:
	case <-time.After(4 * time.Minute):
		t.Fatalf("demo -keep printed no session within 4 minutes; stderr:\n%s", stderr.String())
	}
	if len(block) < 4 {
		t.Fatalf("demo -keep printed no session block (%q); stderr:\n%s", block, stderr.String())
	}
	for i, prefix := range []string{"GATEWAY=http://127.0.0.1:", "OWNER_JWT=eyJ", "PORTAL='X-PORTAL-ACCESS-CODE: "} {
		if !strings.HasPrefix(block[i], prefix) {
			t.Errorf("line %d of the session is %q, want it to start %q", i+1, block[i], prefix)
		}
	}
	if got, want := strings.Join(block[3:], "\n")+"\n", readmeBlock(t, "hand-session"); got != want {
		t.Errorf("the README's hand-session block is not what demo -keep prints:\nREADME:\n%s\ndemo:\n%s", want, got)
	}

	// The session, then the README's audit-trail call in the same shell.
	script := strings.Join(block, "\n") + "\n" + "echo '-- audit events'\n" + readmeBlock(t, "audit-events")
	out := runBash(t, t.TempDir(), script, cleanEnv())
	// create 201, call 200, revoke 200, call again 401, events 200.
	if got, want := statuses(out), []int{201, 200, 200, 401, 200}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v; output:\n%s", got, want, out)
	}
	id := regexp.MustCompile(`"apiKeyId":"(sk_live_[0-9A-Za-z]{14})"`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no apiKeyId in the output:\n%s", out)
	}
	for _, want := range []string{
		`"X-Api-Key-Id":["` + id[1] + `"]`, // the upstream saw the key's id
		`"status":"REVOKED"`,               // the revoke answered the revoked key
		`"code":"4012"`,                    // and the gateway then refused it
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	_, events, _ := strings.Cut(out, "-- audit events\n")
	revoked, created := strings.Index(events, `"action":"REVOKED"`), strings.Index(events, `"action":"CREATED"`)
	if revoked < 0 || created < revoked || strings.Count(events, `"apiKeyId":"`+id[1]+`"`) != 2 {
		t.Errorf("the audit trail is not the key's REVOKED then CREATED:\n%s", events)
	}
	if strings.Contains(out, `"X-Api-Key":`) {
		t.Errorf("the upstream saw the key:\n%s", out)
	}
}

// TestReadmeSidecarDirect runs the README's "Using the sidecar directly"
// block with bash in an empty directory: the sidecar it builds comes from
// this tree (go build -C), and it listens on a free port instead of 8080;
// everything else is run as written.
func TestReadmeSidecarDirect(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the sidecar")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	block := readmeBlock(t, "sidecar-direct")
	dir := t.TempDir()
	addr := freePort()
	for _, r := range [][2]string{
		{"go build -o bin/ ./cmd/keygate-sidecar", fmt.Sprintf("go build -C %s -o %s/ ./cmd/keygate-sidecar", repo, filepath.Join(dir, "bin"))},
		{"127.0.0.1:8080", addr},
	} {
		if !strings.Contains(block, r[0]) {
			t.Fatalf("the README's sidecar-direct block no longer contains %q", r[0])
		}
		block = strings.ReplaceAll(block, r[0], r[1])
	}
	out := runBash(t, dir, block, cleanEnv())
	// create 201, list 200, roll 201, revoke 200.
	if got, want := statuses(out), []int{201, 200, 201, 200}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v; output:\n%s", got, want, out)
	}
	id := regexp.MustCompile(`(?m)^KEY_ID=(sk_live_[0-9A-Za-z]{14})$`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("the block printed no KEY_ID:\n%s", out)
	}
	if n := strings.Count(out, `"apiKeyId":"`+id[1]+`"`); n < 4 {
		t.Errorf("the key %s appears in %d answers, want all 4:\n%s", id[1], n, out)
	}
	if !strings.Contains(out, `"status":"REVOKED"`) {
		t.Errorf("the revoke did not answer a REVOKED key:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "keygate.db")); err != nil {
		t.Errorf("the database is not where the README puts it: %v", err)
	}
}

// TestDocsReferToRepoFiles: every path of the repository that a document
// names (README.md, docs/, the Kong files, Dockerfile, Makefile) exists.
func TestDocsReferToRepoFiles(t *testing.T) {
	t.Parallel()
	docs, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, "../README.md", "../kong/kong.yml", "../kong/kong.conf", "../Dockerfile", "../Makefile", "../schema.lua")
	// A path: one of the repository's top-level directories, then more.
	path := regexp.MustCompile("(?:^|[\\s`(\"'=])((?:api|bench|cmd|deploy|docs|e2e|examples|internal|kong|kongemu|plugin|sidecar|store)/[A-Za-z0-9_./-]*)")
	for _, doc := range docs {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range path.FindAllStringSubmatch(string(raw), -1) {
			p := strings.TrimRight(m[1], ".-")
			if strings.HasPrefix(p, "kong/") && strings.HasSuffix(p, ".lua") {
				continue // Kong's own source, cited where kongemu follows it
			}
			if _, err := os.Stat(filepath.Join("..", p)); err == nil {
				continue
			}
			// pkg/path.Identifier names a package's symbol.
			if i := strings.LastIndexByte(p, '.'); i > 0 && i+1 < len(p) && p[i+1] >= 'A' && p[i+1] <= 'Z' {
				if fi, err := os.Stat(filepath.Join("..", p[:i])); err == nil && fi.IsDir() {
					continue
				}
			}
			t.Errorf("%s names %s, which is not in the repository", strings.TrimPrefix(doc, "../"), p)
		}
	}
}

// TestExamplesExplainThemselves: -h of every example program says what it
// is before its flags.
func TestExamplesExplainThemselves(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the examples")
	}
	dir := t.TempDir()
	for _, c := range []struct{ pkg, want string }{
		{"demo", "demo runs keygate's whole path"},
		{"mintjwt", "mintjwt mints a development owner JWT"},
		{"upstream", "upstream is the example product service"},
	} {
		bin := filepath.Join(dir, c.pkg)
		if out, err := exec.Command("go", "build", "-C", "..", "-o", bin, "./examples/"+c.pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", c.pkg, err, out)
		}
		out, err := exec.Command(bin, "-h").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), c.want) || !strings.Contains(string(out), "Flags:") {
			t.Errorf("%s -h: %v\n%s", c.pkg, err, out)
		}
	}
}

// TestNoCitationOfOutsideSpec: the repository's contract is
// docs/CONTRACT.md; no file cites the brief it was written from, which is
// not in the repository.
func TestNoCitationOfOutsideSpec(t *testing.T) {
	t.Parallel()
	cite := regexp.MustCompile(`SPEC(\.md| §)`)
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata", "artifacts":
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".lua", ".yml", ".yaml", ".sh", ".conf", ".mjs", ".js", ".html":
		default:
			if d.Name() != "Makefile" && d.Name() != "Dockerfile" {
				return nil
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if path == "../e2e/readme_test.go" {
			return nil // this test's own pattern
		}
		if loc := cite.FindIndex(raw); loc != nil {
			t.Errorf("%s cites %q: cite docs/CONTRACT.md instead", strings.TrimPrefix(path, "../"), raw[loc[0]:loc[1]])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
