package plugin

import (
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/identity"
)

// fakeKong records what the plugin asks of Kong; for the fuzz target,
// where go-pdk's bridge would be too slow.
type fakeKong struct {
	h       map[string][]string
	p       string
	ip      string
	exited  bool
	status  int
	authID  string
	set     map[string][]string
	cleared []string
}

func (f *fakeKong) headers() (map[string][]string, error)  { return f.h, nil }
func (f *fakeKong) path() (string, error)                  { return f.p, nil }
func (f *fakeKong) method() (string, error)                { return "GET", nil }
func (f *fakeKong) forwardedIP() (string, error)           { return f.ip, nil }
func (f *fakeKong) authenticate(id string) error           { f.authID = id; return nil }
func (f *fakeKong) setHeaders(h map[string][]string) error { f.set = h; return nil }
func (f *fakeKong) clearHeader(n string) error             { f.cleared = append(f.cleared, n); return nil }
func (f *fakeKong) log(kongLevel, string)                  {}
func (f *fakeKong) exit(status int, _ []byte, _ map[string][]string) {
	f.exited, f.status = true, status
}

// oneKey is a verifier that knows exactly one secret (standing in for the
// key service inside the fuzz loop only; behaviour tests use the real
// sidecar).
type oneKey struct {
	secret string
	facts  *apikey.Facts
	asked  atomic.Int64
}

func (o *oneKey) verify(key, _ string, _, _ []byte, _ time.Duration) (*apikey.Facts, time.Duration, error) {
	o.asked.Add(1)
	if key == o.secret {
		return o.facts, 0, nil
	}
	return nil, 0, nil
}

// FuzzAccess: property — no input is proxied on a management route without
// a JWT whose signature verifies (checked here independently of
// golang-jwt) under an allowed algorithm, and no input is allowed on an
// enforce route without presenting the one valid key; a key that fails the
// format check never reaches the key service.
func FuzzAccess(f *testing.F) {
	k := keys()
	valid := apikey.NewSecret(apikey.Live).Reveal()
	hs := sign(f, jwt.SigningMethodHS256, []byte(hsSecret), claims(), "")
	rs := sign(f, jwt.SigningMethodRS256, k.rsa, claims(), "")
	confused := sign(f, jwt.SigningMethodHS256, []byte(k.rsaPEM), claims(), "")
	none := sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(), "")
	const p = "/web/v1/workspaces/ws1/api-keys"
	for _, s := range []struct{ auth, xkey, path, portal string }{
		{"Bearer " + hs, "", p, "code-partner"},
		{"Bearer " + rs, "", p, "code-merchant"},
		{"Bearer " + tamper("Bearer " + rs)[7:], "", p, "code-partner"},
		{"Bearer " + confused, "", p, "code-partner"},
		{"Bearer " + none, "", p, "code-partner"},
		{"Bearer " + rs[:len(rs)-2], "", p, "code-partner"},
		{"Bearer " + hs, "", "/web/v1/workspaces/ws1/../ws2", "code-partner"},
		{"Bearer " + valid, "", p, ""},
		{"", valid, p, ""},
		{"Bearer " + valid, valid, p, ""},
		{"bearer " + valid[:len(valid)-1] + "x", "", p, ""},
		{"", badChecksum(), p, ""},
		{"Basic " + valid, "", p, ""},
	} {
		f.Add(s.auth, s.xkey, s.path, s.portal)
	}

	manage := manageConfig(func(c *Config) { c.JWTAlgorithms = []string{"HS256", "RS256"} })
	if _, err := manage.instance(); err != nil {
		f.Fatal(err)
	}
	enforce := enforceConfig("http://127.0.0.1:1")
	in, err := enforce.instance()
	if err != nil {
		f.Fatal(err)
	}
	svc := &oneKey{secret: valid, facts: &apikey.Facts{APIKeyID: apikey.NewID(apikey.Live), WorkspaceID: "ws1", Mode: apikey.Live, Scopes: []string{"payment:read"}}}
	in.sidecar = svc
	in.cacheNS = "fuzz"
	in.stream = nil // no sidecar behind the fake service

	f.Fuzz(func(t *testing.T, auth, xkey, path, portal string) {
		h := map[string][]string{}
		if auth != "" {
			h["authorization"] = []string{auth}
		}
		if xkey != "" {
			h["x-api-key"] = []string{xkey}
		}
		if portal != "" {
			h["x-portal-access-code"] = []string{portal}
		}

		fk := &fakeKong{h: h, p: path, ip: "10.0.0.1"}
		manage.access(fk)
		if !fk.exited {
			tok, _ := identity.Bearer(auth)
			if !independentlyValid(tok, k.rsa.Public().(*rsa.PublicKey)) {
				t.Fatalf("management request proxied without a valid signature: auth %q", auth)
			}
			if _, ok := workspaceFromPath(path); !ok || fk.set["X-Keygate-Identity"] == nil {
				t.Fatalf("proxied without a workspace or an assertion: path %q", path)
			}
		}

		asked := svc.asked.Load()
		fk = &fakeKong{h: h, p: path, ip: "10.0.0.1"}
		enforce.access(fk)
		presented, st, _ := in.findKey(h)
		if !fk.exited {
			if st != keyOne || presented != valid || fk.authID != svc.facts.APIKeyID {
				t.Fatalf("allowed without the valid key: auth %q x-api-key %q", auth, xkey)
			}
		}
		if _, ok := apikey.ParseSecret(presented); (!ok || st != keyOne) && svc.asked.Load() != asked {
			t.Fatalf("key service asked about a key that fails the format check: %q", presented)
		}
	})
}

// independentlyValid checks an HS256 or RS256 compact JWS with plain
// crypto, plus the presence of exp: what must hold for anything to be
// proxied.
func independentlyValid(tok string, pub *rsa.PublicKey) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	hdr, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	payload, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	var c map[string]any
	if json.Unmarshal(hdr, &h) != nil || json.Unmarshal(payload, &c) != nil {
		return false
	}
	if _, ok := c["exp"].(float64); !ok {
		return false
	}
	signed := []byte(parts[0] + "." + parts[1])
	switch h.Alg {
	case "HS256":
		m := hmac.New(sha256.New, []byte(hsSecret))
		m.Write(signed)
		return hmac.Equal(m.Sum(nil), sig)
	case "RS256":
		d := sha256.Sum256(signed)
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig) == nil
	}
	return false
}
