package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/kongemu/kongemutest"
)

// TestKongLogThroughKongemu runs the real keygate binary under kongemu (our
// player of Kong's side of the plugin protocol) with no KEYGATE_* variable
// in its environment — what Kong gives the plugin when kong.conf's
// nginx_main_env lists none — and checks that what an operator must see
// arrives through kong.log, which Kong writes at its default log level
// (the plugin's own stderr is logged at INFO and dropped there):
//   - a route whose gateway secret is missing: 500/5000, and a line naming
//     nginx_main_env;
//   - a gateway secret that is an unresolved {vault://…} reference: refused;
//   - a key service that cannot be reached: 503/5030, reported once even
//     for several requests.
func TestKongLogThroughKongemu(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for _, pkg := range []string{".", "../kongemu"} {
		if out, err := exec.Command("go", "build", "-o", bin+"/", pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	sidecar := kongemutest.ClosedAddr(t)
	yml := fmt.Sprintf(`_format_version: "3.0"
services:
  - name: orders
    url: http://%[1]s
    routes:
      - name: no-secret
        paths: [/no-secret]
        plugins:
          - name: keygate
            config: {route_role: enforce, sidecar_url: "http://%[1]s", required_scopes: [orders:read]}
      - name: vault
        paths: [/vault]
        plugins:
          - name: keygate
            config: {route_role: enforce, sidecar_url: "http://%[1]s", required_scopes: [orders:read], gateway_secret: "{vault://env/keygate-gateway-secret}"}
      - name: down
        paths: [/down]
        plugins:
          - name: keygate
            config: {route_role: enforce, sidecar_url: "http://%[1]s", required_scopes: [orders:read], gateway_secret: kong-test-gateway-secret-0123456789}
`, sidecar)
	if err := os.WriteFile(filepath.Join(dir, "kong.yml"), []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	gateway := kongemutest.ClosedAddr(t)
	cmd := exec.Command(filepath.Join(bin, "kongemu"), "--config", filepath.Join(dir, "kong.yml"), "--plugin", filepath.Join(bin, "keygate"),
		"--listen", gateway, "--prefix", dir)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out kongemutest.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGTERM, not SIGKILL: kongemu then stops the plugin it started, as
	// Kong does; killed outright it would leave the plugin orphaned.
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("kongemu did not stop within 10 s of SIGTERM")
		}
	})

	client := http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+gateway+path, nil)
		req.Header.Set("X-API-Key", apikey.NewSecret(apikey.Live).Reveal())
		res, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(res.Body)
		return res.StatusCode, b.String()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if status, _ := get("/nothing-here"); status != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kongemu did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, tc := range []struct {
		path   string
		status int
		code   string
		line   string
	}{
		{"/no-secret", 500, "5000", "`nginx_main_env = KEYGATE_GATEWAY_SECRET` to kong.conf"},
		{"/vault", 500, "5000", "gateway_secret is a Kong vault reference ({vault://…}) that Kong does not resolve"},
		{"/down", 503, "5030", "key service at http://" + sidecar + " unavailable; answered 503/5030"},
	} {
		for range 3 {
			status, body := get(tc.path)
			if status != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) {
				t.Fatalf("GET %s: %d %s, want %d/%s", tc.path, status, body, tc.status, tc.code)
			}
		}
		// Count kongemu's lines for kong.log calls, not the copies of the
		// plugin's stderr (tagged "[keygate:PID]", as Kong tags them).
		logs, n := out.String(), 0
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, tc.line) && !strings.Contains(l, "[keygate:") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("GET %s ×3: %d kong.log lines containing %q, want 1 (rate-limited); kongemu's output:\n%s", tc.path, n, tc.line, logs)
		}
	}
	if strings.Contains(out.String(), "kong-test-gateway-secret") {
		t.Error("the gateway secret was logged")
	}
}
