package plugin

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/envelope"
)

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64u(k.N.Bytes()), "e": b64u(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	raw, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	n := (len(raw) - 1) / 2
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64u(raw[1 : 1+n]), "y": b64u(raw[1+n:])}
}

func okpJWK(kid string, k ed25519.PublicKey) map[string]any {
	return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64u(k)}
}

// jwksServer serves a JWKS document that tests can replace, counting GETs.
type jwksServer struct {
	*httptest.Server
	doc  atomic.Pointer[[]byte]
	hits atomic.Int64
	slow atomic.Bool
}

func newJWKSServer(t *testing.T, keys ...map[string]any) *jwksServer {
	s := &jwksServer{}
	s.set(keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.slow.Load() {
			time.Sleep(200 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.doc.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(keys ...map[string]any) {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	s.doc.Store(&b)
}

func jwksConfig(url string) *Config {
	return manageConfig(func(c *Config) {
		c.JWTAlgorithms = []string{"RS256", "ES256", "EdDSA"}
		c.JWTSecret, c.JWTPublicKeys, c.JWKSURL = "", nil, url
	})
}

func TestJWKSRotation(t *testing.T) {
	t.Parallel()
	k := keys()
	srv := newJWKSServer(t, rsaJWK("k1", &k.rsa.PublicKey), ecJWK("e1", &k.ec.PublicKey), okpJWK("o1", k.ed.Public().(ed25519.PublicKey)))
	set := jwksFor(srv.URL)
	set.minRefresh = 0 // let every unknown kid refresh in this test
	cfg := jwksConfig(srv.URL)
	try := func(m jwt.SigningMethod, key any, kid string) *kongEnv {
		return serve(t, cfg, manageRequest("Bearer "+sign(t, m, key, claims(), kid), "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
	}
	for _, tc := range []struct {
		m   jwt.SigningMethod
		key any
		kid string
	}{{jwt.SigningMethodRS256, k.rsa, "k1"}, {jwt.SigningMethodES256, k.ec, "e1"}, {jwt.SigningMethodEdDSA, k.ed, "o1"}, {jwt.SigningMethodRS256, k.rsa, ""}} {
		if e := try(tc.m, tc.key, tc.kid); e.exited() {
			t.Fatalf("%s kid %q rejected: %s", tc.m.Alg(), tc.kid, e.ClientRes.Body)
		}
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times for known kids, want 1", n)
	}
	// A token signed by k1's key but naming e1 (an EC key) is not accepted.
	wantReject(t, try(jwt.SigningMethodRS256, k.rsa, "e1"), envelope.Unauthorized)

	// Rotation: the IdP now publishes k2 only.
	srv.set(rsaJWK("k2", &k.rsa2.PublicKey))
	if e := try(jwt.SigningMethodRS256, k.rsa2, "k2"); e.exited() {
		t.Fatalf("rotated key k2 rejected: %s", e.ClientRes.Body)
	}
	wantReject(t, try(jwt.SigningMethodRS256, k.rsa, "k1"), envelope.Unauthorized)
}

// TestJWKSUnknownKidFlood: a flood of tokens with unknown kids causes at
// most one fetch per minRefresh, and nobody waits long.
func TestJWKSUnknownKidFlood(t *testing.T) {
	t.Parallel()
	k := keys()
	srv := newJWKSServer(t, rsaJWK("k1", &k.rsa.PublicKey))
	cfg := jwksConfig(srv.URL)
	in, err := cfg.instance()
	if err != nil {
		t.Fatal(err)
	}
	if _, why := in.verifyJWT([]string{"Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "k1")}); why != "" {
		t.Fatal(why)
	}
	toks := make([]string, 300)
	for i := range toks {
		toks[i] = sign(t, jwt.SigningMethodES256, k.ec, claims(), fmt.Sprintf("unknown-%d", i))
	}
	srv.slow.Store(true)
	start := time.Now()
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for _, tok := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, why := in.verifyJWT([]string{"Bearer " + tok}); why == "" {
				accepted.Add(1)
			}
		}()
	}
	wg.Wait()
	if accepted.Load() != 0 {
		t.Fatalf("%d tokens with unknown kids accepted", accepted.Load())
	}
	if n := srv.hits.Load(); n > 2 {
		t.Errorf("JWKS fetched %d times, want at most 2 (initial + one refresh)", n)
	}
	if d := time.Since(start); d > JWKSFetchTimeout {
		t.Errorf("flood took %v", d)
	}
	// The known kid keeps working during and after the flood.
	if _, why := in.verifyJWT([]string{"Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "k1")}); why != "" {
		t.Error(why)
	}
}

func TestJWKSDown(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 500) }))
	defer srv.Close()
	cfg := jwksConfig(srv.URL)
	e := serve(t, cfg, manageRequest("Bearer "+sign(t, jwt.SigningMethodRS256, keys().rsa, claims(), "k1"), "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
	wantReject(t, e, envelope.Unauthorized)
}

func TestParseJWKS(t *testing.T) {
	t.Parallel()
	k := keys()
	ec := ecJWK("bad", &k.ec.PublicKey)
	ec["y"] = ec["x"] // not on the curve
	small := map[string]any{"kty": "RSA", "kid": "small", "n": b64u(make([]byte, 128)), "e": "AQAB"}
	enc := rsaJWK("enc", &k.rsa.PublicKey)
	enc["use"] = "enc"
	hs := map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
	good := rsaJWK("good", &k.rsa.PublicKey)
	b, _ := json.Marshal(map[string]any{"keys": []any{ec, small, enc, hs, good}})
	got, err := parseJWKS(b)
	if err != nil || len(got) != 1 || got[0].kid != "good" {
		t.Fatalf("parseJWKS = %+v, %v; want only the good key", got, err)
	}
	b, _ = json.Marshal(map[string]any{"keys": []any{hs}})
	if _, err := parseJWKS(b); err == nil {
		t.Error("a JWKS without a usable key was accepted")
	}
	if _, err := parseJWKS([]byte("<html>")); err == nil {
		t.Error("non-JSON accepted")
	}
}

// newJWKSTLSServer is newJWKSServer over https (a real TLS server on
// loopback); the key set of its URL trusts the server's certificate.
func newJWKSTLSServer(t *testing.T, keys ...map[string]any) *jwksServer {
	s := &jwksServer{}
	s.set(keys...)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.doc.Load())
	}))
	t.Cleanup(s.Close)
	jwksFor(s.URL).client.Transport = s.Client().Transport
	return s
}

// TestJWKSRemovedKeyStopsWithinInterval: a key removed from the JWKS (an
// https server) stops verifying within the refresh interval, while a key
// still published keeps working.
func TestJWKSRemovedKeyStopsWithinInterval(t *testing.T) {
	t.Parallel()
	k := keys()
	srv := newJWKSTLSServer(t, rsaJWK("k1", &k.rsa.PublicKey), rsaJWK("k2", &k.rsa2.PublicKey))
	set := jwksFor(srv.URL)
	set.maxAge, set.minRefresh = 1500*time.Millisecond, 100*time.Millisecond
	cfg := jwksConfig(srv.URL)
	try := func(key any, kid string) *kongEnv {
		return serve(t, cfg, manageRequest("Bearer "+sign(t, jwt.SigningMethodRS256, key, claims(), kid), "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
	}
	if e := try(k.rsa, "k1"); e.exited() {
		t.Fatalf("k1 rejected: %s", e.ClientRes.Body)
	}
	srv.set(rsaJWK("k2", &k.rsa2.PublicKey)) // the IdP removes k1
	removed := time.Now()
	for {
		e := try(k.rsa, "k1")
		if e.exited() {
			wantReject(t, e, envelope.Unauthorized)
			break
		}
		if time.Since(removed) > set.maxAge+JWKSFetchTimeout {
			t.Fatalf("removed key k1 still verifies %s after its removal (interval %s)", time.Since(removed), set.maxAge)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(removed); d > set.maxAge+500*time.Millisecond {
		t.Fatalf("k1 stopped after %s, interval %s", d, set.maxAge)
	}
	if e := try(k.rsa2, "k2"); e.exited() {
		t.Fatalf("k2, still published, rejected: %s", e.ClientRes.Body)
	}
}

// TestJWKSRedirectStaysHTTPS: a JWKS URL that redirects to plain http is
// not followed (no key, the token is refused); a redirect to https is.
func TestJWKSRedirectStaysHTTPS(t *testing.T) {
	t.Parallel()
	k := keys()
	plain := newJWKSServer(t, rsaJWK("k1", &k.rsa.PublicKey))
	target := newJWKSTLSServer(t, rsaJWK("k1", &k.rsa.PublicKey))
	for _, tc := range []struct {
		name, to string
		ok       bool
	}{{"to http", plain.URL, false}, {"to https", target.URL, true}} {
		t.Run(tc.name, func(t *testing.T) {
			redir := httptest.NewTLSServer(http.RedirectHandler(tc.to+"/jwks.json", http.StatusFound))
			defer redir.Close()
			jwksFor(redir.URL).client.Transport = target.Client().Transport // trusts every httptest certificate
			before := plain.hits.Load()
			e := serve(t, jwksConfig(redir.URL), manageRequest("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "k1"),
				"/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
			if tc.ok && e.exited() {
				t.Fatalf("redirect to https not followed: %s", e.ClientRes.Body)
			}
			if !tc.ok {
				wantReject(t, e, envelope.Unauthorized)
				if plain.hits.Load() != before {
					t.Fatal("the plain-http JWKS was fetched")
				}
			}
		})
	}
}

// TestJWKSUnreachableFailsClosed: while the JWKS cannot be fetched the last
// keys keep verifying for a while, then no longer (a removed key cannot
// outlive the bound by taking the IdP down), and a refused token says why
// through kong.log, which Kong shows at its default level.
func TestJWKSUnreachableFailsClosed(t *testing.T) {
	t.Parallel()
	k := keys()
	srv := newJWKSTLSServer(t, rsaJWK("k1", &k.rsa.PublicKey))
	set := jwksFor(srv.URL)
	set.maxAge, set.maxStale, set.minRefresh = 500*time.Millisecond, 700*time.Millisecond, 50*time.Millisecond
	cfg := jwksConfig(srv.URL)
	try := func() *kongEnv {
		return serve(t, cfg, manageRequest("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "k1"), "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
	}
	if e := try(); e.exited() {
		t.Fatalf("k1 rejected: %s", e.ClientRes.Body)
	}
	fetched := time.Now()
	srv.set() // no usable key: every fetch fails from now on
	for {
		e := try()
		if e.exited() {
			wantReject(t, e, envelope.Unauthorized)
			wantLog(t, e, "err", "cannot be fetched")
			break
		}
		if time.Since(fetched) > set.maxAge+set.maxStale+JWKSFetchTimeout {
			t.Fatalf("k1 still verifies %s after the last good fetch (bound %s)", time.Since(fetched), set.maxAge+set.maxStale)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(fetched); d < set.maxAge {
		t.Fatalf("the last keys were dropped %s after the last good fetch, before the refresh interval %s", d, set.maxAge)
	}
}

// A jwks_url with a password in it never shows it in what the plugin logs.
func TestJWKSURLRedactedInLogs(t *testing.T) {
	t.Parallel()
	s := newJWKSSet("https://user:hunter2-secret@idp.example/jwks.json")
	if strings.Contains(s.shown, "hunter2") || !strings.Contains(s.shown, "idp.example") {
		t.Fatalf("shown %q", s.shown)
	}
}
