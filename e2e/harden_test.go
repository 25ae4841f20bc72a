package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestManagementHeaders: every management answer through the gateway —
// list, get, a create's 201, the plugin's own rejections and the key
// service's errors — carries Cache-Control: no-store and
// X-Content-Type-Options: nosniff (docs/SECURITY.md).
func TestManagementHeaders(t *testing.T) {
	s := startStack(t)
	owner := portal("alice", workspace, "OWNER", publicCode)
	r := s.call("POST", keysPath, owner, `{"name":"h","scopes":["orders:read"]}`)
	wantEnvelope(t, r, 201, "2000")
	id := str(r.data["apiKeyId"])
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		body               string
		status             int
		code               string
	}{
		{"list", "GET", keysPath, owner, "", 200, "2000"},
		{"get", "GET", keysPath + "/" + id, owner, "", 200, "2000"},
		{"events", "GET", "/web/v1/workspaces/" + workspace + "/api-key-events", owner, "", 200, "2000"},
		{"unknown key (sidecar)", "GET", keysPath + "/sk_live_00000000000000", owner, "", 404, "4040"},
		{"bad body (sidecar)", "POST", keysPath, owner, `{"name":""}`, 400, "4000"},
		{"no JWT (plugin)", "GET", keysPath, map[string]string{"X-PORTAL-ACCESS-CODE": publicCode}, "", 401, "4010"},
		{"not owner (plugin)", "GET", keysPath, portal("bob", workspace, "MEMBER", publicCode), "", 403, "4030"},
		{"unknown portal (plugin)", "GET", keysPath, portal("alice", workspace, "OWNER", "nope"), "", 403, "4032"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.call(tc.method, tc.path, tc.headers, tc.body)
			wantEnvelope(t, r, tc.status, tc.code)
			if r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("headers %v", r.header)
			}
		})
	}
}

// TestPreflightIsNoFailedLogin: a browser's CORS preflights (OPTIONS with
// Access-Control-Request-Method, no credentials) are not counted by the
// failed-verification limiter, so the owner's address is not blocked by its
// own browser; a plain request without a JWT still is.
func TestPreflightIsNoFailedLogin(t *testing.T) {
	s := startStack(t)
	const browser, other = "203.0.113.44", "203.0.113.45"
	owner := portal("alice", workspace, "OWNER", publicCode)
	pre := from(browser, "Origin", "https://portal.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization,content-type,x-portal-access-code")
	for range 30 { // more than failure_burst (20)
		r := s.call("OPTIONS", keysPath, pre, "")
		wantEnvelope(t, r, 401, "4010")
	}
	r := s.call("GET", keysPath, from(browser, "Authorization", owner["Authorization"], "X-PORTAL-ACCESS-CODE", publicCode), "")
	wantEnvelope(t, r, 200, "2000")

	// The same number of OPTIONS without the preflight header, or GETs
	// without a JWT, are failed logins: the address is blocked.
	for range 20 {
		wantEnvelope(t, s.call("OPTIONS", keysPath, from(other, "X-PORTAL-ACCESS-CODE", publicCode), ""), 401, "4010")
	}
	r = s.call("GET", keysPath, from(other, "Authorization", owner["Authorization"], "X-PORTAL-ACCESS-CODE", publicCode), "")
	wantEnvelope(t, r, 429, "4290")
}

// TestSidecarOverTLS runs the whole path with the sidecar serving TLS
// only: the plugin verifies keys at an https sidecar_url trusting
// sidecar_ca_file, kongemu proxies the management routes over https, and a
// revoke is still seen at the gateway within the bound. Nothing reaches the
// sidecar in clear: its port speaks only TLS.
func TestSidecarOverTLS(t *testing.T) {
	s := startStack(t, withTLS)
	owner := portal("alice", workspace, "OWNER", publicCode)
	r := s.call("POST", keysPath, owner, `{"name":"tls","scopes":["orders:read"]}`)
	wantEnvelope(t, r, 201, "2000")
	key, id := str(r.data["secret"]), str(r.data["apiKeyId"])
	r = s.call("GET", "/orders/1", map[string]string{"X-API-Key": key}, "")
	wantEnvelope(t, r, 200, "")
	if r.json["headers"].(map[string]any)["X-Api-Key-Id"] == nil {
		t.Fatalf("upstream did not see the key id: %s", r.body)
	}
	// The plugin's invalidation stream, opened by that request, reaches the
	// TLS-only sidecar too (it dials through the same endpoint).
	for deadline := time.Now().Add(5 * time.Second); s.metric(t, "keygate_push_subscribers") < 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no invalidation stream reached the TLS sidecar")
		}
	}
	wantEnvelope(t, s.call("DELETE", keysPath+"/"+id, owner, ""), 200, "2000")
	deadline := time.Now().Add(1500 * time.Millisecond)
	for {
		r = s.call("GET", "/orders/1", map[string]string{"X-API-Key": key}, "")
		if r.status == 401 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantEnvelope(t, r, 401, "4012")
	// The sidecar's port answers no plain-http request.
	res, err := http.Get(strings.Replace(s.sidecarURL, "https://", "http://", 1) + "/healthz")
	if err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("the sidecar answered plain http")
		}
	}
	if r := s.http(); r == http.DefaultClient {
		t.Fatal("stack is not TLS")
	}
}
