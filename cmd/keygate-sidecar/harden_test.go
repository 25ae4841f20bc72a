package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/identity"
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
