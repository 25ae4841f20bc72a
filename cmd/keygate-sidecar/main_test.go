package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keygate-sidecar-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "keygate-sidecar")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	gw    = "bin-test-gateway-secret-000000"
	admin = "bin-test-admin-token-000000000"
)

type proc struct {
	cmd  *exec.Cmd
	addr string
	logs *bytes.Buffer
	mu   *sync.Mutex
}

type syncBuf struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (s syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// launch starts the sidecar binary and waits for /readyz.
func launch(t *testing.T, db string, env []string, args ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	p := &proc{addr: addr, logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(bin, append([]string{"--listen", addr, "--db", db}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = syncBuf{p.mu, p.logs}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get("http://" + addr + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return p
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("sidecar not ready; logs:\n%s", p.logText())
	return nil
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

var env = []string{"KEYGATE_GATEWAY_SECRET=" + gw, "KEYGATE_ADMIN_TOKEN=" + admin}

func post(addr, path, auth, body string) (int, map[string]any, error) {
	req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+auth)
	req.Header.Set("Content-Type", "application/json")
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, err
	}
	var env struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return 0, nil, fmt.Errorf("%d %s", res.StatusCode, raw)
	}
	return res.StatusCode, env.Data, nil
}

func verifyAllowed(t *testing.T, addr, secret string) bool {
	t.Helper()
	code, data, err := post(addr, "/internal/v1/verify", gw, fmt.Sprintf(`{"key":%q,"requiredScopes":["orders:read"]}`, secret))
	if err != nil || code != 200 {
		t.Fatalf("verify: %d %v", code, err)
	}
	return data["allow"] == true
}

// Every key that got a 201 survives kill -9 mid-load and still verifies.
func TestKill9KeepsAcknowledgedKeys(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "data", "keygate.db")
	p := launch(t, db, env)
	var mu sync.Mutex
	acked := map[string]string{} // secret → id
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				code, data, err := post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, fmt.Sprintf(`{"name":"w%d-%d","scopes":["orders:read"]}`, w, i))
				if err != nil {
					return // the process died under us
				}
				if code == 201 {
					mu.Lock()
					acked[data["secret"].(string)] = data["apiKeyId"].(string)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	cancel()
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no key acknowledged before the kill")
	}
	p2 := launch(t, db, env)
	for secret := range acked {
		if !verifyAllowed(t, p2.addr, secret) {
			t.Fatalf("acknowledged key lost after kill -9 (%d acknowledged)", len(acked))
		}
	}
	t.Logf("%d acknowledged keys all survived kill -9", len(acked))
}

// No secret, admin token or gateway secret in the db file or the logs.
func TestSecretsNeverAtRestOrInLogs(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "keygate.db")
	p := launch(t, db, env)
	var secrets []string
	for i := range 20 {
		code, data, err := post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, fmt.Sprintf(`{"name":"k%d","scopes":["orders:read"]}`, i))
		if err != nil || code != 201 {
			t.Fatalf("create %d %v", code, err)
		}
		secrets = append(secrets, data["secret"].(string))
		verifyAllowed(t, p.addr, data["secret"].(string))
		post(p.addr, "/web/v1/workspaces/ws/api-keys/"+data["apiKeyId"].(string)+"/roll", admin, "")
	}
	post(p.addr, "/internal/v1/verify", "wrong", `{"key":"x"}`)
	res, _ := http.Get("http://" + p.addr + "/metrics")
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM exit: %v\n%s", err, p.logText())
	}
	file, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	logs := p.logText()
	for _, s := range append(secrets, gw, admin) {
		body := s[len(s)-20:] // any long run of the secret
		if bytes.Contains(file, []byte(body)) || strings.Contains(logs, body) || bytes.Contains(metrics, []byte(body)) {
			t.Fatalf("secret material found at rest, in logs or metrics")
		}
	}
}

func TestRefusesToStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	held := launch(t, filepath.Join(dir, "locked.db"), env)
	_ = held
	other := filepath.Join(dir, "other.db") // a key file of format version 99
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return m.Put([]byte("version"), []byte{0, 0, 0, 99})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing gateway secret", []string{"KEYGATE_GATEWAY_SECRET="}, []string{"--db", filepath.Join(dir, "a.db")}, "gateway secret missing"},
		{"db locked by another process", env, []string{"--db", filepath.Join(dir, "locked.db")}, "locked by another process"},
		{"missing secret file", nil, []string{"--db", filepath.Join(dir, "b.db"), "--gateway-secret-file", filepath.Join(dir, "nope")}, "no such file"},
		{"key file of another format version", env, []string{"--db", other}, other + ": format version 99, and this keygate reads version 1"},
		{"bad scopes file", env, []string{"--db", filepath.Join(dir, "c.db"), "--scopes-file", filepath.Join(dir, "nope")}, "scopes file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, append([]string{"--listen", freeAddr(t)}, tc.args...)...)
			cmd.Env = append(os.Environ(), tc.env...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), tc.want) {
				t.Fatalf("err %v, output %s", err, out)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("took %s to refuse", time.Since(start))
			}
		})
	}
}

func TestSecretFilesAndVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gw"), []byte(gw+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "admin"), []byte(admin+"\n"), 0o600)
	p := launch(t, filepath.Join(dir, "k.db"), []string{"KEYGATE_GATEWAY_SECRET=", "KEYGATE_ADMIN_TOKEN="},
		"--gateway-secret-file", filepath.Join(dir, "gw"), "--admin-token-file", filepath.Join(dir, "admin"))
	code, data, err := post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, `{"name":"k","scopes":["orders:read"]}`)
	if err != nil || code != 201 || !verifyAllowed(t, p.addr, data["secret"].(string)) {
		t.Fatalf("create with file secrets: %d %v", code, err)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "keygate-sidecar ") {
		t.Fatalf("--version: %s %v", out, err)
	}
}

func TestUnixSocket(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "kg.sock")
	cmd := exec.Command(bin, "--listen", "unix:"+sock, "--db", filepath.Join(dir, "k.db"))
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := client.Get("http://sidecar/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("unix socket never served: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestHelpSaysWhatItIs: --help names the program's job and the secret it
// cannot start without.
func TestHelpSaysWhatItIs(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, want := range []string{"keygate's key service", "Required: the gateway secret", "$KEYGATE_GATEWAY_SECRET", "--gateway-secret-file", "-listen", "Example:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

// TestConfigErrorBeforeAnyLog: a configuration the sidecar refuses is
// reported alone — no log line before it, no database file opened.
func TestConfigErrorBeforeAnyLog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"short gateway secret, no admin token", []string{"KEYGATE_GATEWAY_SECRET=too-short", "KEYGATE_ADMIN_TOKEN="}, "gateway secret must be at least 16 bytes"},
		{"admin token equal to the gateway secret", []string{"KEYGATE_GATEWAY_SECRET=" + gw, "KEYGATE_ADMIN_TOKEN=" + gw}, "admin token must differ from the gateway secret"},
		{"short admin token", []string{"KEYGATE_GATEWAY_SECRET=" + gw, "KEYGATE_ADMIN_TOKEN=short"}, "admin token must be at least 16 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := filepath.Join(t.TempDir(), "data", "k.db")
			cmd := exec.Command(bin, "--listen", freeAddr(t), "--db", db)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("started: %v\n%s", err, out)
			}
			if want := "keygate-sidecar: " + tc.want; !strings.HasPrefix(string(out), want) || strings.Count(string(out), "\n") != 1 {
				t.Errorf("output %q, want only %q", out, want)
			}
			if _, err := os.Stat(db); !os.IsNotExist(err) {
				t.Errorf("the database was opened before the configuration was refused: %v", err)
			}
		})
	}
}

// TestFirstLogLineIsListening: a sidecar that starts logs first that it
// listens, with whether the admin API is on — nothing before it that a
// later failure to start would make misleading.
func TestFirstLogLineIsListening(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		admin string
		want  string
	}{
		{"admin API off", "", `"adminAPI":false`},
		{"admin API on", admin, `"adminAPI":true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := launch(t, filepath.Join(t.TempDir(), "k.db"), []string{"KEYGATE_GATEWAY_SECRET=" + gw, "KEYGATE_ADMIN_TOKEN=" + tc.admin})
			first, _, _ := strings.Cut(p.logText(), "\n")
			if !strings.Contains(first, `"msg":"sidecar listening"`) || !strings.Contains(first, tc.want) {
				t.Errorf("first log line %s, want sidecar listening with %s", first, tc.want)
			}
		})
	}
}
