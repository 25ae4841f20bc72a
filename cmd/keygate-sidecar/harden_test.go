package main_test

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
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
