package sidecar_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/internal/identity"
)

var update = flag.Bool("update", false, "rewrite the golden envelopes in testdata/")

// normalize replaces the values that change on every run, keeping the shape.
func normalize(t *testing.T, raw []byte) []byte {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	v["timestamp"] = 1709337600000
	v["requestId"] = "REQUEST-ID"
	if d, ok := v["data"].(map[string]any); ok {
		for k, placeholder := range map[string]string{
			"apiKeyId": "sk_live_APIKEYID000000", "secret": "sk_live_SECRET", "secretHint": "sk_live_…HINT",
			"createdAt": "2026-03-21T00:00:00Z",
		} {
			if _, ok := d[k]; ok {
				d[k] = placeholder
			}
		}
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return append(out, '\n')
}

// The seed page's examples, as golden envelopes (go test -run Golden -update
// rewrites them after an intended change).
func TestGoldenEnvelopes(t *testing.T) {
	t.Parallel()
	h := start(t)
	member := assertion(t, identity.Claims{Subject: "u", WorkspaceID: "ws_g", Role: "MEMBER"})
	for _, tc := range []struct {
		file, method, path, auth, body string
	}{
		{"create_201.json", "POST", "/web/v1/workspaces/ws_g/api-keys", owner(t, "ws_g", "PARTNER", true),
			`{"name":"Production Key","scopes":["payment:read","payment:write"],"mode":1,"ipWhitelist":["192.168.1.0/24"]}`},
		{"create_401.json", "POST", "/web/v1/workspaces/ws_g/api-keys", "", `{"name":"Production Key"}`},
		{"create_403.json", "POST", "/web/v1/workspaces/ws_g/api-keys", member, `{"name":"Production Key"}`},
		{"create_400.json", "POST", "/web/v1/workspaces/ws_g/api-keys", "admin", `{"name":"k","ipWhitelist":["192.168.1.5/24"]}`},
	} {
		t.Run(tc.file, func(t *testing.T) {
			h := h.with(t)
			got := normalize(t, h.do(tc.method, tc.path, tc.auth, tc.body).raw)
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs:\n got %s\nwant %s", tc.file, got, want)
			}
		})
	}
}
