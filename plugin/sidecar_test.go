package plugin

// Enforcement against the REAL sidecar (package sidecar, bbolt in a temp
// dir, listening on a unix socket as in production): keys are created and
// revoked through its admin API, then presented to the plugin.

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/store"
)

const adminToken = "test-admin-token-0123456789"

type realSidecar struct {
	url  string // sidecar_url for the plugin
	http *http.Client
	base string // scheme and host of admin requests; "" is http://sidecar
}

// startSidecar runs a real sidecar on a unix socket.
func startSidecar(t testing.TB) *realSidecar {
	t.Helper()
	dir, err := os.MkdirTemp("", "kg") // short: unix socket paths are limited to ~108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "keygate.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sidecar.Start(sidecar.Config{
		Listen:        "unix:" + sock,
		Store:         st,
		GatewaySecret: []byte(gwSecret),
		AdminToken:    []byte(adminToken),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("start sidecar: %v", err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &realSidecar{
		url: "unix:" + sock,
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}},
	}
}

func (s *realSidecar) do(t testing.TB, method, path, body string) envelope.Envelope {
	t.Helper()
	base := s.base
	if base == "" {
		base = "http://sidecar"
	}
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env envelope.Envelope
	if err := json.Unmarshal(b, &env); err != nil || !env.Success {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return env
}

type createdKey struct {
	APIKeyID string `json:"apiKeyId"`
	Secret   string `json:"secret"`
}

// create makes a key in ws through the admin API; body is the create body.
func (s *realSidecar) create(t testing.TB, ws, body string) createdKey {
	t.Helper()
	env := s.do(t, http.MethodPost, "/web/v1/workspaces/"+ws+"/api-keys", body)
	var k createdKey
	if err := json.Unmarshal(env.Data, &k); err != nil || k.Secret == "" {
		t.Fatalf("create: %s", env.Data)
	}
	return k
}

func (s *realSidecar) revoke(t testing.TB, ws, id string) {
	t.Helper()
	s.do(t, http.MethodDelete, "/web/v1/workspaces/"+ws+"/api-keys/"+id, "")
}

func TestEnforceRealSidecar(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	live := sc.create(t, "ws1", `{"name":"live","scopes":["payment:read","payment:write"]}`)
	testKey := sc.create(t, "ws1", `{"name":"test","scopes":["payment:read"],"mode":2}`)
	zero := sc.create(t, "ws1", `{"name":"zero"}`)
	listed := sc.create(t, "ws2", `{"name":"ip","scopes":["payment:read"],"ipWhitelist":["10.0.0.0/8","2001:db8::/32"]}`)
	revoked := sc.create(t, "ws1", `{"name":"revoked","scopes":["payment:read"]}`)
	sc.revoke(t, "ws1", revoked.APIKeyID)
	expiring := sc.create(t, "ws1", `{"name":"expiring","scopes":["payment:read"],"expiresAt":"`+
		time.Now().Add(2*time.Second).UTC().Format(time.RFC3339)+`"}`)
	unknown := apikey.NewSecret(apikey.Live).Reveal()

	// Wait for the expiring key to expire (the sidecar needs expiresAt in
	// the future at creation).
	time.Sleep(time.Until(time.Now().Add(2 * time.Second).Truncate(time.Second).Add(1100 * time.Millisecond)))

	allow := []string{pdkGetHeaders, pdkAuth, pdkSetHeaders, pdkClearHeader}
	allowIP := []string{pdkGetHeaders, pdkFwdIP, pdkAuth, pdkSetHeaders, pdkClearHeader}
	invalid := []string{pdkGetHeaders, pdkFwdIP, pdkExit}
	tests := []struct {
		name   string
		cfg    func(*Config)
		h      http.Header
		ip     string
		want   envelope.Code // "" allow
		calls  []string
		key    createdKey // on allow
		ws     string
		mode   string
		kept   string // header expected to reach the upstream with the key
		hidden []string
	}{
		// 4012 after asking the sidecar: the failed-verification limiter
		// asks who failed (one more call, on the failure path only).
		{name: "unknown key", h: http.Header{"X-Api-Key": {unknown}}, want: envelope.InvalidKey, calls: invalid},
		{name: "revoked key", h: http.Header{"X-Api-Key": {revoked.Secret}}, want: envelope.InvalidKey, calls: invalid},
		{name: "expired key", h: http.Header{"X-Api-Key": {expiring.Secret}}, want: envelope.InvalidKey, calls: invalid},
		{name: "unknown key, limiter off", cfg: func(c *Config) { c.FailureLimitPerMinute = intp(0) },
			h: http.Header{"X-Api-Key": {unknown}}, want: envelope.InvalidKey},
		{name: "TEST key on a LIVE route", h: http.Header{"X-Api-Key": {testKey.Secret}}, want: envelope.ModeDenied},
		{name: "zero-scope key", h: http.Header{"X-Api-Key": {zero.Secret}}, want: envelope.ScopeDenied},
		{name: "zero-scope key, TEST allowed too", cfg: func(c *Config) { c.AllowedModes = []string{"LIVE", "TEST"} },
			h: http.Header{"X-Api-Key": {zero.Secret}}, want: envelope.ScopeDenied},
		{name: "missing scope", cfg: func(c *Config) { c.RequiredScopes = []string{"payment:read", "refund:write"} },
			h: http.Header{"X-Api-Key": {live.Secret}}, want: envelope.ScopeDenied},
		{name: "IP outside the whitelist", h: http.Header{"X-Api-Key": {listed.Secret}}, ip: "192.0.2.1", want: envelope.IPDenied,
			calls: []string{pdkGetHeaders, pdkFwdIP, pdkExit}},
		{name: "unparsable client IP", h: http.Header{"X-Api-Key": {listed.Secret}}, ip: "not-an-ip", want: envelope.IPDenied,
			calls: []string{pdkGetHeaders, pdkFwdIP, pdkExit}},

		{name: "allow, X-API-Key", h: http.Header{"X-Api-Key": {live.Secret}}, calls: allow, key: live, ws: "ws1", mode: "LIVE", hidden: []string{"X-Api-Key"}},
		{name: "allow, Bearer", h: http.Header{"Authorization": {"Bearer " + live.Secret}}, calls: allow, key: live, ws: "ws1", mode: "LIVE", hidden: []string{"Authorization"}},
		{name: "allow, same key in both headers", h: http.Header{"Authorization": {"bearer " + live.Secret}, "X-Api-Key": {live.Secret}},
			calls: []string{pdkGetHeaders, pdkAuth, pdkSetHeaders, pdkClearHeader, pdkClearHeader}, key: live, ws: "ws1", mode: "LIVE", hidden: []string{"Authorization", "X-Api-Key"}},
		{name: "allow, TEST key on a TEST route", cfg: func(c *Config) { c.AllowedModes = []string{"TEST"} },
			h: http.Header{"X-Api-Key": {testKey.Secret}}, calls: allow, key: testKey, ws: "ws1", mode: "TEST"},
		{name: "allow, IP inside the whitelist", h: http.Header{"X-Api-Key": {listed.Secret}}, ip: "10.1.2.3", calls: allowIP, key: listed, ws: "ws2", mode: "LIVE"},
		{name: "allow, IPv4-mapped client IP inside the whitelist", h: http.Header{"X-Api-Key": {listed.Secret}}, ip: "::ffff:10.9.8.7", calls: allowIP, key: listed, ws: "ws2", mode: "LIVE"},
		{name: "allow, IPv6 inside the whitelist", h: http.Header{"X-Api-Key": {listed.Secret}}, ip: "2001:db8::1", calls: allowIP, key: listed, ws: "ws2", mode: "LIVE"},
		{name: "allow, hide_credentials false", cfg: func(c *Config) { c.HideCredentials = boolp(false) },
			h: http.Header{"X-Api-Key": {live.Secret}}, calls: []string{pdkGetHeaders, pdkAuth, pdkSetHeaders}, key: live, ws: "ws1", mode: "LIVE", kept: "X-Api-Key"},
		{name: "allow, custom key header", cfg: func(c *Config) { c.KeyHeaders = []string{"X-Payments-Key"} },
			h: http.Header{"X-Payments-Key": {live.Secret}}, calls: allow, key: live, ws: "ws1", mode: "LIVE", hidden: []string{"X-Payments-Key"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := enforceConfig(sc.url, tc.cfg)
			h := tc.h.Clone()
			h.Set("X-Api-Key-Id", "forged") // clients cannot choose the upstream identity
			e := serve(t, cfg, keyRequest(h), tc.ip)
			if tc.want != "" {
				wantReject(t, e, tc.want)
				calls := tc.calls
				if calls == nil {
					calls = []string{pdkGetHeaders, pdkExit}
				}
				wantCalls(t, e, calls...)
				return
			}
			if e.exited() {
				t.Fatalf("rejected: %d %s", e.ClientRes.Status, e.ClientRes.Body)
			}
			wantCalls(t, e, tc.calls...)
			up := e.ServiceReq.Headers
			if up.Get(HeaderAPIKeyID) != tc.key.APIKeyID || up.Get(HeaderWorkspaceID) != tc.ws || up.Get(HeaderAPIKeyMode) != tc.mode {
				t.Errorf("upstream headers: id %q ws %q mode %q", up.Get(HeaderAPIKeyID), up.Get(HeaderWorkspaceID), up.Get(HeaderAPIKeyMode))
			}
			if len(up.Values(HeaderAPIKeyID)) != 1 {
				t.Errorf("X-Api-Key-Id has %d values", len(up.Values(HeaderAPIKeyID)))
			}
			for _, name := range tc.hidden {
				if up.Get(name) != "" {
					t.Errorf("credential header %s reached the upstream", name)
				}
			}
			if tc.kept != "" && up.Get(tc.kept) != tc.key.Secret {
				t.Errorf("hide_credentials false: %s was removed", tc.kept)
			}
			if rid := up.Get("X-Request-Id"); len(rid) != 36 {
				t.Errorf("generated X-Request-Id upstream = %q", rid)
			}
		})
	}
}

// TestEnforceCacheTTL: a revoked key is rejected within cache_ttl_ms, and
// within the TTL the sidecar is not asked again.
func TestEnforceCacheTTL(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	k := sc.create(t, "ws1", `{"name":"k","scopes":["payment:read"]}`)
	cfg := enforceConfig(sc.url, func(c *Config) { c.CacheTTLMS = intp(300) })
	req := func() *kongEnv { return serve(t, cfg, keyRequest(http.Header{"X-Api-Key": {k.Secret}}), "") }
	if e := req(); e.exited() {
		t.Fatalf("rejected: %s", e.ClientRes.Body)
	}
	sc.revoke(t, "ws1", k.APIKeyID)
	revokedAt := time.Now()
	// Within the TTL the cached facts answer (the sidecar is not asked).
	if e := req(); e.exited() && time.Since(revokedAt) < 250*time.Millisecond {
		t.Logf("already rejected after %v (cache dropped early: allowed)", time.Since(revokedAt))
	}
	time.Sleep(310 * time.Millisecond)
	e := req()
	wantReject(t, e, envelope.InvalidKey)
	if d := time.Since(revokedAt); d > time.Second {
		t.Errorf("revocation took %v to apply", d)
	}
}

// TestEnforceSidecarWrongSecret: a sidecar that refuses our gateway secret
// is a failure of the key service, never an allow.
func TestEnforceSidecarWrongSecret(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	k := sc.create(t, "ws1", `{"name":"k","scopes":["payment:read"]}`)
	cfg := enforceConfig(sc.url, func(c *Config) { c.GatewaySecret = "another-gateway-secret-xyz" })
	e := serve(t, cfg, keyRequest(http.Header{"X-Api-Key": {k.Secret}}), "")
	wantReject(t, e, envelope.Unavailable)
}

// TestNoSecretsLogged runs allowed and rejected requests with debug logging
// and checks that no key, JWT or gateway secret appears in the log.
func TestNoSecretsLogged(t *testing.T) {
	logs := captureLogs(t)
	sc := startSidecar(t)
	k := sc.create(t, "ws1", `{"name":"k","scopes":["payment:read"],"ipWhitelist":["10.0.0.0/8"]}`)
	cfg := enforceConfig(sc.url)
	serve(t, cfg, keyRequest(http.Header{"X-Api-Key": {k.Secret}}), "10.0.0.1")
	serve(t, cfg, keyRequest(http.Header{"X-Api-Key": {k.Secret}}), "192.0.2.1")
	serve(t, cfg, keyRequest(http.Header{"Authorization": {"Bearer " + badChecksum()}}), "")
	tok := sign(t, jwt.SigningMethodRS256, keys().rsa, claims(), "")
	serve(t, manageConfig(), manageRequest("Bearer "+tok, "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
	serve(t, manageConfig(), manageRequest("Bearer "+tok, "/web/v1/workspaces/ws2/api-keys", "code-partner", nil), "")
	out := logs.String()
	for _, secret := range []string{k.Secret, k.Secret[8:], tok, strings.Split(tok, ".")[2], gwSecret, hsSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret")
		}
	}
	if !strings.Contains(out, k.APIKeyID) {
		t.Errorf("log does not name the apiKeyId:\n%s", out)
	}
}

// BenchmarkVerifyRoundTrip measures the plugin → sidecar verify call over
// a unix socket (no cache), reporting the median (target p50 ≤ 100 µs).
func BenchmarkVerifyRoundTrip(b *testing.B) {
	sc := startSidecar(b)
	k := sc.create(b, "ws1", `{"name":"k","scopes":["payment:read"]}`)
	in, err := enforceConfig(sc.url).instance()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		f, _, err := in.sidecar.verify(k.Secret, "bench", in.verifyTail, in.bearer, in.timeout)
		lat = append(lat, time.Since(start))
		if err != nil || f == nil {
			b.Fatal(f, err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkEnforceCached is the plugin's own work on a cache hit (the PDK
// round trips are Kong's).
func BenchmarkEnforceCached(b *testing.B) {
	sc := startSidecar(b)
	k := sc.create(b, "ws1", `{"name":"k","scopes":["payment:read"]}`)
	cfg := enforceConfig(sc.url)
	h := map[string][]string{"x-api-key": {k.Secret}, "x-request-id": {"r1"}}
	b.ReportAllocs()
	for b.Loop() {
		fk := &fakeKong{h: h}
		cfg.access(fk)
		if fk.exited {
			b.Fatal("rejected")
		}
	}
}
