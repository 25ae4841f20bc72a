package plugin

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Kong/go-pdk/test"
	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
)

func TestManage(t *testing.T) {
	t.Parallel()
	k := keys()
	hs := func(c jwt.MapClaims) string {
		return "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(hsSecret), c, "")
	}
	rs := func(c jwt.MapClaims) string { return "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, c, "") }
	none := "Bearer " + sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(), "")
	big := rs(claims(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", MaxTokenLen) }))
	const path = "/web/v1/workspaces/ws1/api-keys"

	tests := []struct {
		name   string
		cfg    func(*Config)
		auth   string
		path   string
		portal string
		want   envelope.Code // "" = proxied
	}{
		{name: "no Authorization", want: envelope.Unauthorized},
		{name: "not bearer", auth: "Basic dXNlcjpwYXNz", want: envelope.Unauthorized},
		{name: "empty bearer", auth: "Bearer ", want: envelope.Unauthorized},
		{name: "malformed", auth: "Bearer not.a.jwt", want: envelope.Unauthorized},
		{name: "garbage", auth: "Bearer ....", want: envelope.Unauthorized},
		{name: "alg none", auth: none, want: envelope.Unauthorized},
		{name: "alg none lower-case scheme", auth: "bearer " + strings.TrimPrefix(none, "Bearer "), want: envelope.Unauthorized},
		{
			name: "HS256 signed with the RSA public key PEM (RS256-only route)",
			cfg:  func(c *Config) { c.JWTAlgorithms = []string{"RS256"}; c.JWTSecret = "" },
			auth: "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(k.rsaPEM), claims(), ""),
			want: envelope.Unauthorized,
		},
		{
			name: "HS256 signed with the RSA public key PEM (HS256 and RS256 route)",
			auth: "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(k.rsaPEM), claims(), ""),
			want: envelope.Unauthorized,
		},
		{
			name: "HS256 with the right secret on an RS256-only route",
			cfg:  func(c *Config) { c.JWTAlgorithms = []string{"RS256"} },
			auth: hs(claims()),
			want: envelope.Unauthorized,
		},
		{name: "signed by another RSA key", auth: "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa2, claims(), ""), want: envelope.Unauthorized},
		{name: "RS384 not allowed", auth: "Bearer " + sign(t, jwt.SigningMethodRS384, k.rsa, claims(), ""), want: envelope.Unauthorized},
		{name: "tampered payload", auth: tamper(rs(claims())), want: envelope.Unauthorized},
		{name: "expired", auth: rs(claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), want: envelope.Unauthorized},
		{name: "expired within leeway", auth: rs(claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() }))},
		{
			name: "expired, leeway 0",
			cfg:  func(c *Config) { c.JWTLeewaySeconds = intp(0) },
			auth: rs(claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() })),
			want: envelope.Unauthorized,
		},
		{name: "nbf in the future", auth: rs(claims(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(5 * time.Minute).Unix() })), want: envelope.Unauthorized},
		{name: "iat in the future", auth: rs(claims(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(5 * time.Minute).Unix() })), want: envelope.Unauthorized},
		{name: "missing exp", auth: rs(claims(func(c jwt.MapClaims) { delete(c, "exp") })), want: envelope.Unauthorized},
		{name: "exp not a number", auth: rs(claims(func(c jwt.MapClaims) { c["exp"] = "tomorrow" })), want: envelope.Unauthorized},
		{name: "wrong iss", auth: rs(claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" })), want: envelope.Unauthorized},
		{name: "missing iss", auth: rs(claims(func(c jwt.MapClaims) { delete(c, "iss") })), want: envelope.Unauthorized},
		{name: "wrong aud", auth: rs(claims(func(c jwt.MapClaims) { c["aud"] = "other" })), want: envelope.Unauthorized},
		{name: "aud list containing ours", auth: rs(claims(func(c jwt.MapClaims) { c["aud"] = []string{"other", audience} }))},
		{name: "iss/aud unchecked when not configured", cfg: func(c *Config) { c.JWTIssuer, c.JWTAudience = "", "" },
			auth: rs(claims(func(c jwt.MapClaims) { c["iss"], c["aud"] = "x", "y" }))},
		{name: "no sub", auth: rs(claims(func(c jwt.MapClaims) { delete(c, "sub") })), want: envelope.Unauthorized},
		{name: "token over 8 KiB", auth: big, want: envelope.Unauthorized},
		{name: "bad token and unknown portal: 4010 first", auth: "Bearer x", portal: "nope", want: envelope.Unauthorized},

		{name: "RS256", auth: rs(claims())},
		{name: "HS256", auth: hs(claims())},
		{name: "ES256", auth: "Bearer " + sign(t, jwt.SigningMethodES256, k.ec, claims(), "")},
		{name: "EdDSA", auth: "Bearer " + sign(t, jwt.SigningMethodEdDSA, k.ed, claims(), "")},
		{name: "scheme is case-insensitive", auth: "bEaReR " + strings.TrimPrefix(rs(claims()), "Bearer ")},
		{name: "workspace root path", path: "/web/v1/workspaces/ws1", auth: rs(claims())},
		{name: "events path", path: "/web/v1/workspaces/ws1/api-key-events", auth: rs(claims())},

		{name: "wrong workspace", path: "/web/v1/workspaces/ws3/api-keys", auth: rs(claims()), want: envelope.NotOwner},
		{name: "MEMBER role", path: "/web/v1/workspaces/ws2/api-keys", auth: rs(claims()), want: envelope.NotOwner},
		{name: "MEMBER role and unknown portal: 4030 first", path: "/web/v1/workspaces/ws2/api-keys", portal: "nope", auth: rs(claims()), want: envelope.NotOwner},
		{name: "owner (lower case) is not OWNER", auth: rs(claims(func(c jwt.MapClaims) { c["workspaces"] = map[string]any{"ws1": "owner"} })), want: envelope.NotOwner},
		{name: "roles claim not an object", auth: rs(claims(func(c jwt.MapClaims) { c["workspaces"] = []string{"ws1"} })), want: envelope.NotOwner},
		{name: "roles claim missing", auth: rs(claims(func(c jwt.MapClaims) { delete(c, "workspaces") })), want: envelope.NotOwner},
		{name: "custom roles claim", cfg: func(c *Config) { c.RolesClaim = "ws_roles" },
			auth: rs(claims(func(c jwt.MapClaims) { c["ws_roles"] = map[string]any{"ws1": "OWNER"}; delete(c, "workspaces") }))},
		{name: "dot-dot after the workspace", path: "/web/v1/workspaces/ws1/../ws2/api-keys", auth: rs(claims()), want: envelope.NotOwner},
		{name: "dot-dot workspace", path: "/web/v1/workspaces/../api-keys", auth: rs(claims()), want: envelope.NotOwner},
		{name: "percent-encoded", path: "/web/v1/workspaces/ws1/%2e%2e/ws2", auth: rs(claims()), want: envelope.NotOwner},
		{name: "workspace id too long", path: "/web/v1/workspaces/" + strings.Repeat("a", 65) + "/api-keys",
			auth: rs(claims(func(c jwt.MapClaims) { c["workspaces"] = map[string]any{strings.Repeat("a", 65): "OWNER"} })), want: envelope.NotOwner},
		{name: "not a management path", path: "/web/v1/other/ws1", auth: rs(claims()), want: envelope.NotOwner},

		{name: "missing portal", portal: "-", auth: rs(claims()), want: envelope.UnknownPortal},
		{name: "unknown portal", portal: "code-nope", auth: rs(claims()), want: envelope.UnknownPortal},
		{name: "portal code prefix", portal: "code-partne", auth: rs(claims()), want: envelope.UnknownPortal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := manageConfig()
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			p := tc.path
			if p == "" {
				p = path
			}
			portal := tc.portal
			switch portal {
			case "":
				portal = "code-partner"
			case "-":
				portal = ""
			}
			e := serve(t, cfg, manageRequest(tc.auth, p, portal, nil), "")
			switch tc.want {
			case "":
				if e.exited() {
					t.Fatalf("rejected with %d %s, want proxied", e.ClientRes.Status, e.ClientRes.Body)
				}
				wantCalls(t, e, pdkGetHeaders, pdkGetPath, pdkGetMethod, pdkSetHeaders, pdkClearHeader)
			case envelope.Unauthorized:
				wantReject(t, e, tc.want)
				// The failed-verification limiter asks who failed.
				wantCalls(t, e, pdkGetHeaders, pdkFwdIP, pdkExit)
			default:
				wantReject(t, e, tc.want)
				wantCalls(t, e, pdkGetHeaders, pdkGetPath, pdkExit)
			}
		})
	}
}

func tamper(auth string) string {
	parts := strings.Split(auth, ".")
	c := []byte(parts[1])
	if c[2] == 'A' {
		c[2] = 'B'
	} else {
		c[2] = 'A'
	}
	parts[1] = string(c)
	return strings.Join(parts, ".")
}

// TestManageIdentity checks what the sidecar receives: a verifiable
// assertion, no client X-Keygate-* header, no caller JWT.
func TestManageIdentity(t *testing.T) {
	t.Parallel()
	k := keys()
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "")
	for _, tc := range []struct {
		portal   string
		name     string
		testMode bool
		cfg      func(*Config)
	}{
		{portal: "code-partner", name: "PARTNER", testMode: true},
		{portal: "code-merchant", name: "MERCHANT", testMode: false},
		{portal: "code-merchant", name: "MERCHANT", testMode: true, cfg: func(c *Config) { c.TestModePortals = []string{"MERCHANT"} }},
		{portal: "code-partner", name: "PARTNER", testMode: false, cfg: func(c *Config) { c.TestModePortals = []string{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := manageConfig()
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			forged, _ := identity.Sign([]byte(gwSecret), identity.Claims{Subject: "evil", WorkspaceID: "ws2", Role: "OWNER", Portal: "PARTNER", AllowTestMode: true}, time.Now(), time.Minute)
			e := serve(t, cfg, manageRequest(tok, "/web/v1/workspaces/ws1/api-keys", tc.portal, http.Header{
				"X-Request-Id":       {"req-123"},
				"X-Keygate-Identity": {forged},
				"X-Keygate-Admin":    {"true"},
			}), "")
			if e.exited() {
				t.Fatalf("rejected: %s", e.ClientRes.Body)
			}
			wantCalls(t, e, pdkGetHeaders, pdkGetPath, pdkGetMethod, pdkClearHeader, pdkSetHeaders, pdkClearHeader)
			got := e.ServiceReq.Headers.Values(identity.Header)
			if len(got) != 1 || got[0] == forged {
				t.Fatalf("identity header = %q: the client's was not replaced", got)
			}
			c, err := identity.Verify([]byte(gwSecret), got[0], time.Now())
			if err != nil {
				t.Fatalf("identity.Verify: %v", err)
			}
			want := identity.Claims{Subject: "user-1", WorkspaceID: "ws1", Role: "OWNER", Portal: tc.name, RequestID: "req-123", AllowTestMode: tc.testMode,
				Path: "/web/v1/workspaces/ws1/api-keys", Method: "GET",
				ID: c.ID, IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt}
			if c != want || len(c.ID) < 20 {
				t.Errorf("claims = %+v, want %+v", c, want)
			}
			if ttl := c.ExpiresAt - c.IssuedAt; ttl <= 0 || ttl > 60 {
				t.Errorf("assertion lives %d s", ttl)
			}
			if v := e.ServiceReq.Headers.Get("X-Keygate-Admin"); v != "" {
				t.Errorf("client X-Keygate-Admin reached the sidecar: %q", v)
			}
			if v := e.ServiceReq.Headers.Get("Authorization"); v != "" {
				t.Errorf("the caller's JWT reached the sidecar")
			}
			if v := e.ServiceReq.Headers.Get("X-Request-Id"); v != "req-123" {
				t.Errorf("X-Request-Id upstream = %q", v)
			}
		})
	}
}

// TestManageRequestID: without X-Request-Id the plugin makes one, sends it
// upstream and names it in the assertion; a rejection carries it too.
func TestManageRequestID(t *testing.T) {
	t.Parallel()
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, keys().rsa, claims(), "")
	e := serve(t, manageConfig(), manageRequest(tok, "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
	rid := e.ServiceReq.Headers.Get("X-Request-Id")
	if len(rid) != 36 {
		t.Fatalf("generated X-Request-Id = %q", rid)
	}
	c, err := identity.Verify([]byte(gwSecret), e.ServiceReq.Headers.Get(identity.Header), time.Now())
	if err != nil || c.RequestID != rid {
		t.Errorf("assertion requestId = %q (%v), want %q", c.RequestID, err, rid)
	}
	e = serve(t, manageConfig(), manageRequest("", "/web/v1/workspaces/ws1/api-keys", "code-partner", http.Header{"X-Request-Id": {"abc-1"}}), "")
	if env := wantReject(t, e, envelope.Unauthorized); env.RequestID != "abc-1" {
		t.Errorf("requestId = %q, want abc-1", env.RequestID)
	}
}

// TestManageDoHttps runs the management route through go-pdk's own
// request/response simulation.
func TestManageDoHttps(t *testing.T) {
	t.Parallel()
	tok := "Bearer " + sign(t, jwt.SigningMethodEdDSA, keys().ed, claims(), "")
	env, err := test.New(t, manageRequest(tok, "/web/v1/workspaces/ws1/api-keys", "code-partner", nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg := manageConfig()
	env.DoHttps(cfg)
	if env.ClientRes.Status != 200 {
		t.Fatalf("status %d %s", env.ClientRes.Status, env.ClientRes.Body)
	}
	if _, err := identity.Verify([]byte(gwSecret), env.ServiceReq.Headers.Get(identity.Header), time.Now()); err != nil {
		t.Errorf("identity: %v", err)
	}

	env, err = test.New(t, manageRequest("Bearer nope", "/web/v1/workspaces/ws1/api-keys", "code-partner", nil))
	if err != nil {
		t.Fatal(err)
	}
	env.DoHttps(cfg)
	if env.ClientRes.Status != 401 || !strings.Contains(string(env.ClientRes.Body), `"code":"4010"`) {
		t.Errorf("got %d %s", env.ClientRes.Status, env.ClientRes.Body)
	}
}

func TestWorkspaceFromPath(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]string{
		"/web/v1/workspaces/ws1":                  "ws1",
		"/web/v1/workspaces/ws1/":                 "ws1",
		"/web/v1/workspaces/a.b_c-D9/api-keys/x":  "a.b_c-D9",
		"/web/v1/workspaces/":                     "",
		"/web/v1/workspaces/./api-keys":           "",
		"/web/v1/workspaces/../api-keys":          "",
		"/web/v1/workspaces/ws1/./api-keys":       "",
		"/web/v1/workspaces/ws1//api-keys":        "",
		"/web/v1/workspaces/ws%31/api-keys":       "",
		"/web/v1/workspaces/ws1\\..\\ws2":         "",
		"/web/v1/workspaces/w s/api-keys":         "",
		"/api/web/v1/workspaces/ws1/api-keys":     "",
		"/WEB/v1/workspaces/ws1/api-keys":         "",
		"/web/v1/workspaces/ws1/api-keys/..":      "",
		"/web/v1/workspaces/ws1/api-keys/sk_a.b/": "ws1",
	} {
		got, ok := workspaceFromPath(p)
		if got != want || ok != (want != "") {
			t.Errorf("workspaceFromPath(%q) = %q, %v; want %q", p, got, ok, want)
		}
	}
}
