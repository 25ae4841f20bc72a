package main_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
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

	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/testcert"
)

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// --metrics-listen moves /metrics off the API port: the metrics listener
// serves it (and nothing else), the API port answers 404.
func TestMetricsListen(t *testing.T) {
	t.Parallel()
	maddr := freeAddr(t)
	p := launch(t, filepath.Join(t.TempDir(), "k.db"), env, "--metrics-listen", maddr)
	if code, body := get(t, "http://"+maddr+"/metrics"); code != 200 || !strings.Contains(body, "keygate_verify_total") {
		t.Fatalf("metrics listener: %d %.200s", code, body)
	}
	if code, body := get(t, "http://"+p.addr+"/metrics"); code != 404 || !strings.Contains(body, `"code":"4040"`) {
		t.Fatalf("API port still serves /metrics: %d %.200s", code, body)
	}
	for _, path := range []string{"/healthz", "/openapi.yaml", "/web/v1/workspaces/ws/api-keys", "/metrics/"} {
		if code, _ := get(t, "http://"+maddr+path); code != 404 {
			t.Fatalf("metrics listener serves %s: %d", path, code)
		}
	}
	res, err := http.Post("http://"+maddr+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 405 {
		t.Fatalf("POST /metrics on the metrics listener: %d", res.StatusCode)
	}
	// The API still works on its own port.
	if code, _ := get(t, "http://"+p.addr+"/healthz"); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	// Without the flag, /metrics stays on the API port.
	p2 := launch(t, filepath.Join(t.TempDir(), "k.db"), env)
	if code, _ := get(t, "http://"+p2.addr+"/metrics"); code != 200 {
		t.Fatalf("default /metrics: %d", code)
	}
}

// The same create assertion sent twice to the real sidecar makes one key;
// the second answer is 401/4010.
func TestCreateAssertionOnce(t *testing.T) {
	t.Parallel()
	p := launch(t, filepath.Join(t.TempDir(), "k.db"), env)
	const path = "/web/v1/workspaces/ws_once/api-keys"
	tok, err := identity.Sign([]byte(gw), identity.Claims{Subject: "alice", WorkspaceID: "ws_once", Role: identity.RoleOwner,
		Portal: "PUBLIC", RequestID: "r1", Path: path, Method: "POST"}, time.Now(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	send := func() (int, string) {
		req, _ := http.NewRequest("POST", "http://"+p.addr+path, strings.NewReader(`{"name":"once","scopes":["orders:read"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(identity.Header, tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := send(); code != 201 {
		t.Fatalf("first: %d %s", code, body)
	}
	if code, body := send(); code != 401 || !strings.Contains(body, `"code":"4010"`) {
		t.Fatalf("replay: %d %s", code, body)
	}
	req, _ := http.NewRequest("GET", "http://"+p.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var page struct {
		Data struct{ Items []any } `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&page); err != nil || len(page.Data.Items) != 1 {
		t.Fatalf("keys after a replayed create: %d (%v), want 1", len(page.Data.Items), err)
	}
}

// launchTLS starts the sidecar binary serving TLS with the pair written by
// ca as "srv" (common name cn) in dir, and waits until it answers.
func launchTLS(t *testing.T, ca *testcert.CA, dir, cn string, args ...string) (*proc, string, string) {
	t.Helper()
	certFile, keyFile, err := ca.WriteLeaf(dir, "srv", cn)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &proc{addr: addr, logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(bin, append([]string{"--listen", addr, "--db", filepath.Join(dir, "k.db"), "--tls-cert", certFile, "--tls-key", keyFile}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = syncBuf{p.mu, p.logs}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := servedCN(ca, addr); err == nil {
			return p, certFile, keyFile
		}
	}
	t.Fatalf("TLS sidecar not ready; logs:\n%s", p.logText())
	return nil, "", ""
}

// servedCN makes a new TLS connection (verified against ca) and returns the
// common name of the certificate the sidecar served.
func servedCN(ca *testcert.CA, addr string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// waitCN waits up to 5 s for new connections to be served cn.
func waitCN(t *testing.T, p *proc, ca *testcert.CA, cn string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got, _ = servedCN(ca, p.addr)
		if got == cn {
			return
		}
	}
	t.Fatalf("served %q, want %q; logs:\n%s", got, cn, p.logText())
}

// --tls-cert/--tls-key: the API is served over TLS only; the certificate is
// replaced without a restart when its files change and on SIGHUP, and a
// pair that does not load leaves the previous one in place.
func TestTLSServeAndReload(t *testing.T) {
	t.Parallel()
	ca, err := testcert.NewCA("keygate test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, certFile, keyFile := launchTLS(t, ca, dir, "one")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	res, err := client.Get("https://" + p.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("healthz over TLS: %d", res.StatusCode)
	}
	// Plain HTTP gets no answer from the API.
	if res, err := http.Get("http://" + p.addr + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain http served")
		}
	}
	if cn, _ := servedCN(ca, p.addr); cn != "one" {
		t.Fatalf("served %q", cn)
	}

	// The files change: new connections get the new certificate.
	if _, _, err := ca.WriteLeaf(dir, "srv", "two"); err != nil {
		t.Fatal(err)
	}
	waitCN(t, p, ca, "two")

	// A pair that does not match (the key of another certificate) is not
	// loaded: the previous certificate is still served.
	other := t.TempDir()
	_, otherKey, err := ca.WriteLeaf(other, "x", "x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(otherKey)
	os.WriteFile(keyFile, b, 0o600)
	time.Sleep(1100 * time.Millisecond)
	if cn, err := servedCN(ca, p.addr); cn != "two" {
		t.Fatalf("after a mismatched key: %q %v", cn, err)
	}

	// SIGHUP loads the files at once: a new pair with the old files'
	// times, so that only the signal can tell it changed.
	cs, _ := os.Stat(certFile)
	c3, k3, err := ca.Leaf("three")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, c3, 0o600)
	os.WriteFile(keyFile, k3, 0o600)
	os.Chtimes(certFile, cs.ModTime(), cs.ModTime())
	os.Chtimes(keyFile, cs.ModTime(), cs.ModTime())
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitCN(t, p, ca, "three")
	// Only a SIGHUP logs "loaded" (a file change logs "reloaded"; the file
	// check may have seen the new pair first when its size changed).
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.logText(), `"msg":"TLS certificate loaded"`); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload; logs:\n%s", p.logText())
		}
	}
	if strings.Contains(p.logText(), "PRIVATE KEY") {
		t.Fatal("key material in the log")
	}
}
