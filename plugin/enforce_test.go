package plugin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Kong/go-pdk/test"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/kongemu/kongemutest"
)

func keyRequest(h http.Header) test.Request {
	return test.Request{Method: "GET", Url: "http://kong.test/v1/payments?apikey=ignored", Headers: h}
}

// badChecksum returns a secret with a valid format and a wrong checksum.
func badChecksum() string {
	s := []byte(apikey.NewSecret(apikey.Live).Reveal())
	last := len(s) - 1
	if s[last] == 'A' {
		s[last] = 'B'
	} else {
		s[last] = 'A'
	}
	return string(s)
}

// TestEnforceBeforeSidecar covers every rejection decided from the headers
// alone: exactly 2 PDK calls, and the sidecar is never asked.
func TestEnforceBeforeSidecar(t *testing.T) {
	t.Parallel()
	addr, accepted := silentListener(t)
	k1, k2 := apikey.NewSecret(apikey.Live).Reveal(), apikey.NewSecret(apikey.Live).Reveal()
	tests := []struct {
		name string
		cfg  func(*Config)
		h    http.Header
		want envelope.Code
	}{
		{name: "no key", h: http.Header{}, want: envelope.KeyRequired},
		{name: "key only in the query string", h: http.Header{"X-Other": {k1}}, want: envelope.KeyRequired},
		{name: "Authorization with another scheme", h: http.Header{"Authorization": {"Basic " + k1}}, want: envelope.KeyRequired},
		{name: "empty X-API-Key", h: http.Header{"X-Api-Key": {"  "}}, want: envelope.KeyRequired},
		{name: "header not configured", cfg: func(c *Config) { c.KeyHeaders = []string{"X-API-Key"} },
			h: http.Header{"Authorization": {"Bearer " + k1}}, want: envelope.KeyRequired},
		{name: "malformed X-API-Key", h: http.Header{"X-Api-Key": {"not-a-key"}}, want: envelope.InvalidKey},
		{name: "malformed bearer", h: http.Header{"Authorization": {"Bearer sk_live_short"}}, want: envelope.InvalidKey},
		{name: "bearer with two tokens", h: http.Header{"Authorization": {"Bearer " + k1 + " " + k1}}, want: envelope.KeyRequired},
		{name: "bad checksum", h: http.Header{"X-Api-Key": {badChecksum()}}, want: envelope.InvalidKey},
		{name: "bad checksum bearer", h: http.Header{"Authorization": {"bearer " + badChecksum()}}, want: envelope.InvalidKey},
		{name: "API key id instead of secret", h: http.Header{"X-Api-Key": {apikey.NewID(apikey.Live)}}, want: envelope.InvalidKey},
		{name: "two different keys", h: http.Header{"Authorization": {"Bearer " + k1}, "X-Api-Key": {k2}}, want: envelope.InvalidKey},
		{name: "two different X-API-Key values", h: http.Header{"X-Api-Key": {k1, k2}}, want: envelope.InvalidKey},
		{name: "key with trailing garbage", h: http.Header{"X-Api-Key": {k1 + "x"}}, want: envelope.InvalidKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := enforceConfig("http://"+addr, tc.cfg)
			e := serve(t, cfg, keyRequest(tc.h), "")
			wantReject(t, e, tc.want)
			wantCalls(t, e, pdkGetHeaders, pdkExit)
		})
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the sidecar was asked %d times about keys rejected from their format", n)
	}
}

// TestEnforceSidecarDown: connection refused answers 503/5030, never allow.
func TestEnforceSidecarDown(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"http://" + kongemutest.ClosedAddr(t), "unix:" + t.TempDir() + "/nonexistent.sock"} {
		cfg := enforceConfig(url)
		e := serve(t, cfg, keyRequest(http.Header{"X-Api-Key": {apikey.NewSecret(apikey.Live).Reveal()}}), "")
		wantReject(t, e, envelope.Unavailable)
		// The one kong.log line of this sidecar (konglog.go): a failure
		// path, visible at Kong's default log level.
		wantCalls(t, e, pdkGetHeaders, pdkLogErr, pdkExit)
		wantLog(t, e, "err", "key service at "+url+" unavailable")
	}
}

// TestEnforceSidecarSlow: a sidecar that accepts and never answers is a
// 504/5040 after sidecar_timeout_ms.
func TestEnforceSidecarSlow(t *testing.T) {
	t.Parallel()
	addr, accepted := silentListener(t)
	cfg := enforceConfig("http://"+addr, func(c *Config) { c.SidecarTimeoutMS = intp(150) })
	start := time.Now()
	e := serve(t, cfg, keyRequest(http.Header{"X-Api-Key": {apikey.NewSecret(apikey.Live).Reveal()}}), "")
	d := time.Since(start)
	wantReject(t, e, envelope.Timeout)
	wantCalls(t, e, pdkGetHeaders, pdkLogErr, pdkExit)
	wantLog(t, e, "err", "key service at http://"+addr+" did not answer within sidecar_timeout_ms 150; answered 504/5040")
	if d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("answered after %v with a 150 ms timeout", d)
	}
	if accepted.Load() == 0 {
		t.Error("the slow sidecar was never reached")
	}
}

func TestFindKey(t *testing.T) {
	t.Parallel()
	in, err := enforceConfig("http://127.0.0.1:1").instance()
	if err != nil {
		t.Fatal(err)
	}
	k := apikey.NewSecret(apikey.Test).Reveal()
	for _, tc := range []struct {
		h    map[string][]string
		key  string
		st   keyStatus
		from []int
	}{
		{map[string][]string{}, "", keyNone, nil},
		{map[string][]string{"authorization": {"Bearer " + k}}, k, keyOne, []int{0}},
		{map[string][]string{"authorization": {"BEARER\t" + k + " "}}, k, keyOne, []int{0}},
		{map[string][]string{"x-api-key": {" " + k}}, k, keyOne, []int{1}},
		{map[string][]string{"authorization": {"Bearer " + k}, "x-api-key": {k}}, k, keyOne, []int{0, 1}},
		{map[string][]string{"authorization": {"Basic x"}, "x-api-key": {k}}, k, keyOne, []int{1}},
		{map[string][]string{"x-api-key": {k, k}}, k, keyOne, []int{1}},
		{map[string][]string{"x-api-key": {k, "other"}}, k, keyAmbiguous, []int{1}},
	} {
		key, st, from := in.findKey(tc.h)
		if key != tc.key || st != tc.st || !equalInts(from, tc.from) {
			t.Errorf("findKey(%v) = %q, %v, %v; want %q, %v, %v", redactMap(tc.h), apikey.Hint(key), st, from, apikey.Hint(tc.key), tc.st, tc.from)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func redactMap(h map[string][]string) string {
	var b strings.Builder
	for k, v := range h {
		b.WriteString(k + ":" + apikey.Hint(strings.Join(v, ",")) + " ")
	}
	return b.String()
}

func TestFactsOf(t *testing.T) {
	t.Parallel()
	id := apikey.NewID(apikey.Live)
	good := apikey.VerifyResult{Allow: true, APIKeyID: id, WorkspaceID: "ws1", Mode: "LIVE", Scopes: []string{"a:b"},
		IPWhitelist: []string{"10.0.0.0/8", "192.0.2.7"}, ExpiresAt: "2030-01-02T03:04:05Z"}
	f, err := factsOf(&good)
	if err != nil || f.APIKeyID != id || f.Mode != apikey.Live || len(f.IPWhitelist) != 2 || f.ExpiresAt != time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).Unix() {
		t.Fatalf("factsOf = %+v, %v", f, err)
	}
	if f, err := factsOf(&apikey.VerifyResult{DenyCode: "4012"}); f != nil || err != nil {
		t.Errorf("4012: %+v, %v", f, err)
	}
	for name, mut := range map[string]func(*apikey.VerifyResult){
		"bad id":        func(r *apikey.VerifyResult) { r.APIKeyID = "x" },
		"no workspace":  func(r *apikey.VerifyResult) { r.WorkspaceID = "" },
		"bad mode":      func(r *apikey.VerifyResult) { r.Mode = "PROD" },
		"bad whitelist": func(r *apikey.VerifyResult) { r.IPWhitelist = []string{"10.0.0.1/8"} },
		"bad expiry":    func(r *apikey.VerifyResult) { r.ExpiresAt = "soon" },
		"odd denyCode":  func(r *apikey.VerifyResult) { r.DenyCode = "4999" },
		"allow denied":  func(r *apikey.VerifyResult) { r.DenyCode = "4033" },
		"deny allowed":  func(r *apikey.VerifyResult) { r.Allow = false },
	} {
		r := good
		mut(&r)
		if f, err := factsOf(&r); err == nil {
			t.Errorf("%s: accepted as %+v", name, f)
		}
	}
}

func TestCacheBounded(t *testing.T) {
	t.Parallel()
	c := &factsCache{}
	now := time.Now()
	for i := range cacheShards * cacheShardCap * 2 {
		var k cacheKey
		k.ns = "t"
		k.hash[0], k.hash[1], k.hash[2] = byte(i), byte(i>>8), byte(i>>16)
		c.put(k, nil, now, time.Second, 0, nil, 0, 0, now)
	}
	if n := c.len(); n > cacheShards*cacheShardCap {
		t.Errorf("cache holds %d entries, bound %d", n, cacheShards*cacheShardCap)
	}
	var k cacheKey
	c.put(k, &apikey.Facts{}, now, time.Second, 0, nil, 0, 0, now)
	if _, ok, known := c.get(k, now.Add(999*time.Millisecond), nil); !ok || !known {
		t.Error("fresh entry missing")
	}
	if _, ok, known := c.get(k, now.Add(time.Second), nil); ok || !known {
		t.Error("expired entry served, or forgotten as once valid")
	}
	c.put(cacheKey{ns: "late"}, &apikey.Facts{}, now.Add(-time.Second), time.Second, 0, nil, 0, 0, now.Add(time.Millisecond))
	if _, ok, _ := c.get(cacheKey{ns: "late"}, now, nil); ok {
		t.Error("an answer already past its bound was cached")
	}
}

// TestEnforceBrokenAnswers: answers that are not a verify envelope, or 5xx,
// are the key service's failure (503/5030), whatever their status.
func TestEnforceBrokenAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   envelope.Code
	}{
		{"html", 200, "<html>hello</html>", envelope.Unavailable},
		{"empty envelope", 200, `{"success":true,"code":"2000"}`, envelope.Unavailable},
		{"allow without facts", 200, `{"success":true,"code":"2000","data":{"allow":true,"denyCode":""}}`, envelope.Unavailable},
		{"502", 502, `{"success":false,"code":"5000"}`, envelope.Unavailable},
		{"503 store not ready", 503, `{"success":false,"code":"5030"}`, envelope.Unavailable},
		{"401 wrong gateway secret", 401, `{"success":false,"code":"4010"}`, envelope.Unavailable},
		{"429", 429, `{"success":false,"code":"4290"}`, envelope.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == invalidationsPath { // a sidecar without the stream
					w.WriteHeader(http.StatusNotFound)
					return
				}
				body, _ := io.ReadAll(r.Body)
				var vr apikey.VerifyRequest
				if r.Method != http.MethodPost || r.URL.Path != apikey.VerifyPath || r.Header.Get("Authorization") != "Bearer "+gwSecret ||
					json.Unmarshal(body, &vr) != nil || !validSecret(vr.Key) || strings.Contains(string(body), "clientIp") ||
					len(vr.RequiredScopes) != 1 || vr.RequiredScopes[0] != "payment:read" || len(vr.AllowedModes) != 1 || vr.AllowedModes[0] != "LIVE" {
					t.Errorf("unexpected verify request %s %s: %s", r.Method, r.URL.Path, body)
				}
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			e := serve(t, enforceConfig(srv.URL), keyRequest(http.Header{"X-Api-Key": {apikey.NewSecret(apikey.Live).Reveal()}}), "")
			wantReject(t, e, tc.want)
			// The answer is the plugin's own 503, never the key service's:
			// its Retry-After (a 429 of the sidecar's) does not reach the
			// client, which gets 429 only from the limiter.
			if ra := e.ClientRes.Headers.Get("Retry-After"); ra != "" {
				t.Errorf("the key service's Retry-After reached the client: %q", ra)
			}
		})
	}
}

func validSecret(s string) bool { _, ok := apikey.ParseSecret(s); return ok }

// The plugin caches a verify answer for the shorter of cache_ttl_ms and the
// sidecar's cacheMs, so a sidecar whose own view may lag keeps the 1 s
// revocation bound.
func TestEnforceObeysCacheMs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		cacheMs     string
		wantRefetch bool
	}{
		{"cacheMs 300 shortens the 1000 ms TTL", `,"cacheMs":300`, true},
		{"no cacheMs: cache_ttl_ms", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			id := apikey.NewID(apikey.Live)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == invalidationsPath { // a sidecar without the stream
					w.WriteHeader(http.StatusNotFound)
					return
				}
				calls.Add(1)
				io.WriteString(w, `{"version":"1.3.0","timestamp":1,"success":true,"code":"2000","message":"SUCCESS","data":{"allow":true,"denyCode":"",`+
					`"apiKeyId":"`+id+`","workspaceId":"ws1","mode":"LIVE","scopes":["payment:read"],"ipWhitelist":[]`+tc.cacheMs+`}}`)
			}))
			defer srv.Close()
			key := apikey.NewSecret(apikey.Live).Reveal()
			call := func() {
				e := serve(t, enforceConfig(srv.URL), keyRequest(http.Header{"X-Api-Key": {key}}), "")
				if e.ClientRes.Status >= 400 {
					t.Fatalf("rejected: %d %s", e.ClientRes.Status, e.ClientRes.Body)
				}
			}
			call()
			call()
			if n := calls.Load(); n != 1 {
				t.Fatalf("second request asked the sidecar again (%d calls)", n)
			}
			time.Sleep(400 * time.Millisecond)
			call()
			if refetched := calls.Load() == 2; refetched != tc.wantRefetch {
				t.Fatalf("after 400 ms: %d sidecar calls, want refetch %v", calls.Load(), tc.wantRefetch)
			}
		})
	}
}
