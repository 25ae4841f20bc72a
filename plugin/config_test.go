package plugin

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/test"
	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/testcert"
)

func enforceConfig(sidecarURL string, mut ...func(*Config)) *Config {
	c := &Config{
		RouteRole:      RoleEnforce,
		SidecarURL:     sidecarURL,
		GatewaySecret:  gwSecret,
		RequiredScopes: []string{"payment:read"},
		limiterNS:      newLimiterNS(),
	}
	for _, m := range mut {
		if m != nil {
			m(c)
		}
	}
	return c
}

func TestValidateOK(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]*Config{
		"manage":         manageConfig(),
		"manage RS only": manageConfig(func(c *Config) { c.JWTAlgorithms, c.JWTSecret = []string{"RS256", "PS256"}, "" }),
		"manage JWKS": manageConfig(func(c *Config) {
			c.JWTAlgorithms, c.JWTPublicKeys, c.JWKSURL = []string{"ES384"}, nil, "https://idp.test/jwks"
		}),
		"enforce":      enforceConfig("http://127.0.0.1:8080"),
		"enforce unix": enforceConfig("unix:/run/keygate.sock", func(c *Config) { c.CacheTTLMS, c.SidecarTimeoutMS = intp(1), intp(10000) }),
		"enforce defaults": {RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"},
			AllowedModes: []string{"LIVE", "TEST"}, KeyHeaders: []string{"X-Key"}, HideCredentials: boolp(false)},
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestValidateAllProblems: every broken rule is reported, all at once.
func TestValidateAllProblems(t *testing.T) {
	t.Parallel()
	enforce := &Config{
		RouteRole:        RoleEnforce,
		SidecarURL:       "https://sidecar:8443/path",
		SidecarTimeoutMS: intp(0),
		GatewaySecret:    "short",
		RequiredScopes:   []string{},
		AllowedModes:     []string{"PROD"},
		KeyHeaders:       []string{"X Bad"},
		CacheTTLMS:       intp(1001),
		FailureBurst:     intp(0),
		getenv:           func(string) string { return "" },
	}
	err := enforce.Validate()
	for _, want := range []string{
		"sidecar_url", "sidecar_timeout_ms", "gateway_secret must be at least 16 bytes", "required_scopes is required",
		"allowed_modes[0]", "key_headers[0]", "cache_ttl_ms must be 1..1000", "failure_burst must be 1..10000",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("enforce: missing problem %q in:\n%v", want, err)
		}
	}
	if n := len(unjoin(err)); n != 8 {
		t.Errorf("enforce: %d problems, want 8:\n%v", n, err)
	}

	manage := &Config{
		RouteRole:             RoleManage,
		JWTAlgorithms:         []string{"HS256", "RS256", "none", "ES256"},
		JWTSecret:             "too-short",
		JWTPublicKeys:         []string{"not pem"},
		JWKSURL:               "ftp://idp",
		JWTLeewaySeconds:      intp(-1),
		PortalCodes:           map[string]string{"": "PARTNER"},
		FailureLimitPerMinute: intp(-1),
		getenv:                func(string) string { return "" },
	}
	err = manage.Validate()
	for _, want := range []string{
		"gateway_secret is not set", "nginx_main_env = KEYGATE_GATEWAY_SECRET", `jwt_algorithms[2] "none"`, "jwt_secret of at least 32 bytes", "jwt_public_keys[0]",
		"jwks_url must be an http or https URL", "jwt_leeway_seconds must be 0..600", "an access code must not be empty",
		"failure_limit_per_minute must be 0..60000",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("manage: missing problem %q in:\n%v", want, err)
		}
	}

	for _, c := range []*Config{
		{GatewaySecret: gwSecret},
		{RouteRole: "both", GatewaySecret: gwSecret},
		{RouteRole: RoleManage, GatewaySecret: gwSecret},
		{RouteRole: RoleManage, GatewaySecret: gwSecret, JWTAlgorithms: []string{"RS256"}},
		{RouteRole: RoleManage, GatewaySecret: gwSecret, JWTAlgorithms: []string{"RS256"}, JWKSURL: "http://idp.example/jwks"},
		{RouteRole: RoleManage, GatewaySecret: strings.Repeat("s", 40), JWTAlgorithms: []string{"HS256"}, JWTSecret: strings.Repeat("s", 40)},
		{RouteRole: RoleManage, GatewaySecret: gwSecret, JWTAlgorithms: []string{"ES256"}, JWTPublicKeys: []string{keys().rsaPEM}},
		{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"Payment"}},
		{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}, KeyHeaders: []string{}},
		{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}, AllowedModes: []string{}},
		{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}, SidecarURL: "unix:relative.sock"},
		{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}, SidecarURL: "http://host"},
		{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}, FailureLimitPerMinute: intp(60001)},
		{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}, FailureBurst: intp(10001)},
		{RouteRole: RoleManage, GatewaySecret: gwSecret, JWTAlgorithms: []string{"HS256"}, JWTSecret: hsSecret, FailureBurst: intp(-5)},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no problem reported", c)
		}
	}
}

// TestConfigJSON decodes configs the way go-pdk does (json.Unmarshal of
// what Kong sends): absent and null take defaults, explicit values stay.
func TestConfigJSON(t *testing.T) {
	t.Parallel()
	var c Config
	if err := json.Unmarshal([]byte(`{"__seq__":3,"route_role":"enforce","gateway_secret":"`+gwSecret+`",
		"required_scopes":["payment:read"],"hide_credentials":null,"cache_ttl_ms":null,"jwt_secret":null,"key_headers":null}`), &c); err != nil {
		t.Fatal(err)
	}
	s := c.resolve()
	if !s.hideCredentials || s.cacheTTLMS != 1000 || s.timeoutMS != 1000 || s.sidecarURL != DefaultSidecarURL ||
		len(s.keyHeaders) != 2 || s.allowedModes[0] != "LIVE" || s.leewaySeconds != 30 || s.rolesClaim != "workspaces" ||
		s.testModePortals[0] != "PARTNER" || s.failurePerMin != DefaultFailureLimitPerMinute || s.failureBurst != DefaultFailureBurst {
		t.Errorf("defaults not applied: %+v", s)
	}
	var c2 Config
	if err := json.Unmarshal([]byte(`{"route_role":"manage","hide_credentials":false,"jwt_leeway_seconds":0,"test_mode_portals":[],
		"failure_limit_per_minute":0,"failure_burst":1}`), &c2); err != nil {
		t.Fatal(err)
	}
	s = c2.resolve()
	if s.hideCredentials || s.leewaySeconds != 0 || s.testModePortals == nil || len(s.testModePortals) != 0 ||
		s.failurePerMin != 0 || s.failureBurst != 1 {
		t.Errorf("explicit zero values lost: %+v", s)
	}
	if c3 := (&Config{CacheTTLMS: intp(0), RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}}); c3.Validate() == nil {
		t.Error("explicit cache_ttl_ms 0 accepted")
	}
}

func TestGatewaySecretSources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("secret-from-the-file-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name string
		c    *Config
		want string
	}{
		{"config wins", &Config{GatewaySecret: "from-config-0123456", getenv: env(map[string]string{EnvGatewaySecret: "from-env-0123456789"})}, "from-config-0123456"},
		{"env", &Config{getenv: env(map[string]string{EnvGatewaySecret: "from-env-0123456789", EnvGatewaySecretFile: file})}, "from-env-0123456789"},
		{"file", &Config{getenv: env(map[string]string{EnvGatewaySecretFile: file})}, "secret-from-the-file-0123"},
	} {
		got, err := tc.c.gatewaySecret()
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: %q, %v", tc.name, got, err)
		}
	}
	c := &Config{getenv: env(map[string]string{EnvGatewaySecretFile: filepath.Join(dir, "missing")})}
	if _, err := c.gatewaySecret(); err == nil {
		t.Error("missing file accepted")
	}
	c = &Config{getenv: env(nil)}
	if _, err := c.gatewaySecret(); err == nil {
		t.Error("no secret accepted")
	}
}

// TestInvalidConfigAnswers500: every request of a broken route answers
// 500/5000, the problems are logged once, none of them a secret.
func TestInvalidConfigAnswers500(t *testing.T) {
	logs := captureLogs(t)
	cfg := &Config{RouteRole: RoleEnforce, GatewaySecret: "short-secret", CacheTTLMS: intp(5000), getenv: func(string) string { return "" }}
	for i := 0; i < 3; i++ {
		e := serve(t, cfg, test.Request{Method: "GET", Url: "http://kong.test/x", Headers: map[string][]string{"X-Api-Key": {"sk_live_x"}}}, "")
		wantReject(t, e, envelope.Internal)
		if i == 0 { // the first one says why through kong.log (konglog.go)
			wantCalls(t, e, pdkGetHeaders, pdkLogErr, pdkExit)
			if line := wantLog(t, e, "err", "required_scopes is required", "cache_ttl_ms"); strings.Contains(line, "short-secret") {
				t.Errorf("the secret reached kong.log: %s", line)
			}
		} else {
			wantCalls(t, e, pdkGetHeaders, pdkExit)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "required_scopes is required"); n != 1 {
		t.Errorf("problem logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "cache_ttl_ms") {
		t.Errorf("not every problem logged:\n%s", out)
	}
	if strings.Contains(out, "short-secret") {
		t.Errorf("the secret was logged:\n%s", out)
	}

	// And through go-pdk's own simulation.
	env, err := test.New(t, test.Request{Method: "GET", Url: "http://kong.test/x"})
	if err != nil {
		t.Fatal(err)
	}
	env.DoHttps(&Config{RouteRole: "nope"})
	if env.ClientRes.Status != 500 || !strings.Contains(string(env.ClientRes.Body), `"code":"5000"`) {
		t.Errorf("got %d %s", env.ClientRes.Status, env.ClientRes.Body)
	}
}

// panicKong panics inside the handler, as a bug would.
type panicKong struct{ kongAPI }

func (panicKong) path() (string, error) { panic("boom sk_live_secretvalue") }

func TestPanicRecovered(t *testing.T) {
	logs := captureLogs(t)
	cfg := manageConfig()
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, keys().rsa, claims(), "")
	e := serveWith(t, manageRequest(tok, "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "", func(k *pdk.PDK) {
		cfg.access(panicKong{pdkAPI{k}})
	})
	wantReject(t, e, envelope.Internal)
	if strings.Contains(logs.String(), "secretvalue") {
		t.Errorf("panic value with a key was logged: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "panic in access") {
		t.Errorf("panic not logged: %s", logs.String())
	}
}

func TestUnjoin(t *testing.T) {
	t.Parallel()
	if n := len(unjoin(errors.New("x"))); n != 1 {
		t.Error(n)
	}
}

// TestSidecarURLTransport: sidecar_url and sidecar_ca_file at config time.
// Plain http reaches only a loopback host; https verifies against the CA
// file or the system roots.
func TestSidecarURLTransport(t *testing.T) {
	t.Parallel()
	ca, err := testcert.NewCA("config test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := ca.WriteCA(dir, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		name, url, ca string
		want          string // a problem's text; "" when valid
		tls           bool
	}{
		{"loopback http", "http://127.0.0.1:8080", "", "", false},
		{"localhost http", "http://localhost:8080", "", "", false},
		{"ipv6 loopback http", "http://[::1]:8080", "", "", false},
		{"unix", "unix:/run/keygate.sock", "", "", false},
		{"https, system roots", "https://sidecar.internal:8443", "", "", true},
		{"https with CA file", "https://10.0.0.5:8443", caFile, "", true},
		{"http to a remote host", "http://10.0.0.5:8080", "", "plain http is refused to 10.0.0.5, which is not a loopback address", false},
		{"http to a name", "http://sidecar:8080", "", "plain http is refused to sidecar", false},
		{"CA file with http", "http://127.0.0.1:8080", caFile, "sidecar_ca_file is only for an https:// sidecar_url", false},
		{"CA file with unix", "unix:/run/k.sock", caFile, "sidecar_ca_file is only for an https:// sidecar_url", false},
		{"missing CA file", "https://10.0.0.5:8443", filepath.Join(dir, "nope.pem"), "sidecar_ca_file: open", false},
		{"CA file without a certificate", "https://10.0.0.5:8443", junk, "holds no PEM certificate", false},
		{"https without port", "https://sidecar.internal", "", "must name a port", false},
		{"ftp", "ftp://127.0.0.1:21", "", "must be https://host:port", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{RouteRole: RoleEnforce, GatewaySecret: gwSecret, RequiredScopes: []string{"a:b"}, SidecarURL: tc.url, SidecarCAFile: tc.ca}
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				ep, _ := parseSidecarEndpoint(tc.url, tc.ca)
				if (ep.tls != nil) != tc.tls || (tc.tls && ep.tls.MinVersion < tls.VersionTLS12) || (tc.ca != "" && ep.tls.RootCAs == nil) {
					t.Fatalf("endpoint %+v", ep)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("problem %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), gwSecret) {
				t.Fatal("the gateway secret is in the error")
			}
		})
	}
}

// A sidecar_url with a password is refused without repeating the password:
// the refusal is written to Kong's log.
func TestSidecarURLPasswordNotShown(t *testing.T) {
	t.Parallel()
	_, err := parseSidecarEndpoint("https://user:hunter2-secret@sidecar.internal:8443", "")
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "sidecar.internal") {
		t.Fatalf("err = %v", err)
	}
}
