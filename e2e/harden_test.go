package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
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

// TestJWKSOverHTTPSOnly drives the real plugin under kongemu with a manage
// route verifying RS256 owner tokens against a JWKS on an https server
// (trusted through SSL_CERT_FILE in Kong's nginx_main_env): the owner's
// token works; with a JWKS URL that redirects to plain http, the redirect
// is not followed and the same token is refused 401/4010.
func TestJWKSOverHTTPSOnly(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes())}}})
	var plainHits atomic.Int64
	serveDoc := func(hits *atomic.Int64) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if hits != nil {
				hits.Add(1)
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(doc)
		}
	}
	jwks := httptest.NewTLSServer(serveDoc(nil))
	defer jwks.Close()
	plain := httptest.NewServer(serveDoc(&plainHits))
	defer plain.Close()
	redirect := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/jwks.json", http.StatusFound))
	defer redirect.Close()
	caFile := filepath.Join(t.TempDir(), "jwks-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: jwks.Certificate().Raw}), 0o600)

	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "alice", "iat": time.Now().Unix(),
		"exp": time.Now().Add(time.Hour).Unix(), "workspaces": map[string]string{workspace: "OWNER"}})
	tok.Header["kid"] = "k1"
	owner, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": publicCode}

	s := startStack(t, withJWKS(jwks.URL+"/jwks.json", caFile))
	wantEnvelope(t, s.call("GET", keysPath, h, ""), 200, "2000")

	s = startStack(t, withJWKS(redirect.URL+"/jwks.json", caFile))
	wantEnvelope(t, s.call("GET", keysPath, h, ""), 401, "4010")
	if n := plainHits.Load(); n != 0 {
		t.Fatalf("the plain-http JWKS was fetched %d times", n)
	}
}
