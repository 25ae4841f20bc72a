package plugin

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Kong/go-pdk"
	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/kongemu/kongemutest"
	"google.golang.org/protobuf/encoding/protowire"
)

// wantLog checks that the request wrote exactly one kong.log line, at
// level, containing every part of want.
func wantLog(t *testing.T, e *kongEnv, level string, want ...string) string {
	t.Helper()
	logs := e.Logs()
	if len(logs) != 1 || !strings.HasPrefix(logs[0], level+": ") {
		t.Fatalf("kong.log lines %q, want one at %s", logs, level)
	}
	for _, w := range want {
		if !strings.Contains(logs[0], w) {
			t.Errorf("kong.log line %q does not contain %q", logs[0], w)
		}
	}
	return logs[0]
}

// TestKongLogSidecarDown: an unreachable key service is reported through
// kong.log.err (visible at Kong's default log level; the plugin's stderr is
// not), once per kongLogEvery per sidecar, the next line counting the ones
// left out; the request still fails closed.
func TestKongLogSidecarDown(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	url := "http://" + kongemutest.ClosedAddr(t)
	cfg := enforceConfig(url, func(c *Config) { c.clock = func() time.Time { return time.Unix(0, now.Load()) } })
	key := apikey.NewSecret(apikey.Live).Reveal()
	req := func() *kongEnv {
		e := serve(t, cfg, keyRequest(http.Header{"X-Api-Key": {key}}), "")
		wantReject(t, e, envelope.Unavailable)
		return e
	}
	e := req()
	wantCalls(t, e, pdkGetHeaders, pdkLogErr, pdkExit)
	line := wantLog(t, e, "err", "key service at "+url+" unavailable; answered 503/5030", "connection refused", "(request ")
	if strings.Contains(line, key) || strings.Contains(line, gwSecret) {
		t.Errorf("a secret was logged: %q", line)
	}
	for range 3 {
		e = req()
		wantCalls(t, e, pdkGetHeaders, pdkExit)
	}
	now.Add(int64(kongLogEvery))
	e = req()
	wantCalls(t, e, pdkGetHeaders, pdkLogErr, pdkExit)
	wantLog(t, e, "err", "unavailable", "3 more like it since the last such line")
}

// TestKongLogRefusedConfig: a configuration refused because the gateway
// secret is missing — what happens under Kong when nginx_main_env does not
// list it — says so through kong.log.err, naming nginx_main_env.
func TestKongLogRefusedConfig(t *testing.T) {
	t.Parallel()
	cfg := enforceConfig("http://127.0.0.1:1", func(c *Config) {
		c.GatewaySecret = ""
		c.getenv = func(string) string { return "" }
	})
	req := keyRequest(http.Header{"X-Api-Key": {apikey.NewSecret(apikey.Live).Reveal()}})
	e := serve(t, cfg, req, "")
	wantReject(t, e, envelope.Internal)
	wantCalls(t, e, pdkGetHeaders, pdkLogErr, pdkExit)
	wantLog(t, e, "err", "invalid plugin configuration", "every request of this route answers 500/5000",
		"$KEYGATE_GATEWAY_SECRET", "nginx_main_env = KEYGATE_GATEWAY_SECRET")
	e = serve(t, cfg, req, "")
	wantReject(t, e, envelope.Internal)
	wantCalls(t, e, pdkGetHeaders, pdkExit)
}

// TestKongLogNoPortals: a manage route without portal codes says why every
// request is 403/4032.
func TestKongLogNoPortals(t *testing.T) {
	t.Parallel()
	cfg := manageConfig(func(c *Config) { c.PortalCodes = nil })
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, keys().rsa, claims(), "")
	e := serve(t, cfg, manageRequest(tok, "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "")
	wantReject(t, e, envelope.UnknownPortal)
	wantLog(t, e, "warn", "portal_codes is empty")
}

// TestVaultReferenceRefused: a {vault://…} value reaches a Go plugin
// literally (Kong resolves references only in referenceable schema fields);
// it is refused, wherever the secret comes from, never used.
func TestVaultReferenceRefused(t *testing.T) {
	t.Parallel()
	const ref = "{vault://env/keygate-secret-0123456789}"
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(ref+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(name, value string) func(*Config) {
		return func(c *Config) {
			c.GatewaySecret = ""
			c.getenv = func(n string) string {
				if n == name {
					return value
				}
				return ""
			}
		}
	}
	for _, tc := range []struct {
		name, field string
		cfg         *Config
	}{
		{"gateway_secret in the config", "gateway_secret", enforceConfig("http://127.0.0.1:1", func(c *Config) { c.GatewaySecret = ref })},
		{"gateway_secret with spaces", "gateway_secret", enforceConfig("http://127.0.0.1:1", func(c *Config) { c.GatewaySecret = "  " + ref })},
		{"gateway_secret from the environment", "gateway_secret", enforceConfig("http://127.0.0.1:1", env(EnvGatewaySecret, ref))},
		{"gateway_secret from the file", "gateway_secret", enforceConfig("http://127.0.0.1:1", env(EnvGatewaySecretFile, file))},
		{"sidecar_url", "sidecar_url", enforceConfig("{vault://env/url}")},
		{"jwt_secret", "jwt_secret", manageConfig(func(c *Config) { c.JWTSecret = ref })},
		{"jwt_public_keys", "jwt_public_keys[1]", manageConfig(func(c *Config) { c.JWTPublicKeys = []string{keys().rsaPEM, ref} })},
		{"jwks_url", "jwks_url", manageConfig(func(c *Config) { c.JWKSURL = ref })},
		{"portal code", "portal_codes", manageConfig(func(c *Config) { c.PortalCodes = map[string]string{ref: "PARTNER"} })},
		{"manage gateway_secret", "gateway_secret", manageConfig(func(c *Config) { c.GatewaySecret = ref })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.field+" is a Kong vault reference ({vault://…}) that Kong does not resolve") {
				t.Fatalf("Validate = %v, want %s refused as a vault reference", err, tc.field)
			}
		})
	}
	// Through the access phase: 500/5000 and the reason in kong.log.
	e := serve(t, enforceConfig("http://127.0.0.1:1", func(c *Config) { c.GatewaySecret = ref }),
		keyRequest(http.Header{"X-Api-Key": {apikey.NewSecret(apikey.Live).Reveal()}}), "")
	wantReject(t, e, envelope.Internal)
	wantLog(t, e, "err", "gateway_secret is a Kong vault reference")
}

// TestSidecarTimeoutCap: sidecar_timeout_ms stops at MaxSidecarTimeoutMS,
// far below Kong's 60 s plugin socket timeout.
func TestSidecarTimeoutCap(t *testing.T) {
	t.Parallel()
	if MaxSidecarTimeoutMS > 10000 {
		t.Fatalf("MaxSidecarTimeoutMS %d is not far below Kong's 60 s", MaxSidecarTimeoutMS)
	}
	if err := enforceConfig("http://127.0.0.1:1", func(c *Config) { c.SidecarTimeoutMS = intp(MaxSidecarTimeoutMS) }).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, ms := range []int{MaxSidecarTimeoutMS + 1, 60000} {
		err := enforceConfig("http://127.0.0.1:1", func(c *Config) { c.SidecarTimeoutMS = intp(ms) }).Validate()
		if err == nil || !strings.Contains(err.Error(), "sidecar_timeout_ms must be 1..10000") {
			t.Errorf("%d ms: %v", ms, err)
		}
	}
}

// rawHeaders is a get_headers answer (a google.protobuf.Struct) with one
// header whose value is written as given, even when it is not UTF-8 — as
// Kong sends raw header bytes.
func rawHeaders(name, value string) []byte {
	val := protowire.AppendTag(nil, 3, protowire.BytesType) // Value.string_value
	val = protowire.AppendString(val, value)
	entry := protowire.AppendTag(nil, 1, protowire.BytesType) // map key
	entry = protowire.AppendString(entry, name)
	entry = protowire.AppendTag(entry, 2, protowire.BytesType) // map value
	entry = protowire.AppendBytes(entry, val)
	out := protowire.AppendTag(nil, 1, protowire.BytesType) // Struct.fields
	return protowire.AppendBytes(out, entry)
}

// TestInvalidUTF8Headers: go-pdk cannot decode headers that are not UTF-8;
// the request is the client's fault (400/4000), reported through
// kong.log.warn; the same answer in valid UTF-8 is decided as usual.
func TestInvalidUTF8Headers(t *testing.T) {
	t.Parallel()
	cfg := enforceConfig("http://" + kongemutest.ClosedAddr(t))
	run := func(value string) *kongEnv {
		return serveRaw(t, keyRequest(nil), "", rawHeaders("x-api-key", value), func(k *pdk.PDK) { cfg.Access(k) })
	}
	e := run("sk_live_\xff\xfe")
	if e.ClientRes.Status != 400 || !strings.Contains(string(e.ClientRes.Body), `"code":"4000"`) ||
		!strings.Contains(string(e.ClientRes.Body), "request headers must be valid UTF-8") {
		t.Fatalf("got %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}
	if c := e.Calls(); len(c) < 2 || c[0] != pdkGetHeaders || c[len(c)-1] != pdkExit {
		t.Fatalf("calls %q", c)
	}
	e = run("sk_live_valid")
	wantReject(t, e, envelope.InvalidKey)
	wantCalls(t, e, pdkGetHeaders, pdkExit)
}

func TestReservedHeader(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"x-keygate-identity", "x_keygate_identity", "X-KEYGATE-ADMIN", "x-keygate_admin", "x-keygate-x",
		"x-api-key-id", "x_api_key_id", "X-Api_Key-Id", "x-workspace-id", "X_Workspace_Id", "x-api-key-mode", "x_api_key_mode"} {
		if !reservedHeader(name) {
			t.Errorf("%q is not reserved", name)
		}
	}
	for _, name := range []string{"", "x", "x-keygate-", "x-api-key", "x_api_key", "authorization", "x-api-key-ids", "x-api-key-i",
		"y-api-key-id", "xx-api-key-id", "x-workspace", "x-api-key-mod", "x-forwarded-for", "x-keygat-identity"} {
		if reservedHeader(name) {
			t.Errorf("%q is reserved", name)
		}
	}
	for name, want := range map[string]bool{"x-api-key-id": true, "X-Api-Key-Id": true, "x-workspace-id": true, "x-api-key-mode": true,
		"x_api_key_id": false, "x-api_key-id": false, "x-keygate-identity": false} {
		if replacedUpstream(name) != want {
			t.Errorf("replacedUpstream(%q) = %v", name, !want)
		}
	}
}

// TestEnforceStripsReserved: on an allowed request, client headers that
// spell keygate's upstream headers with '_' (Kong's underscores_in_headers
// is on) or X-Keygate-* are removed, one clear_header each; the exact
// spellings are replaced by the one set_headers. Without them the budget
// stays 4 calls (TestEnforceRealSidecar).
func TestEnforceStripsReserved(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	k := sc.create(t, "ws1", `{"name":"k","scopes":["payment:read"]}`)
	cfg := enforceConfig(sc.url)
	e := serve(t, cfg, keyRequest(http.Header{
		"X-Api-Key":          {k.Secret},
		"X-Api-Key-Id":       {"sk_live_forgedforgedforg"},
		"X_api_key_id":       {"sk_live_forgedforgedforg"},
		"X-Workspace_id":     {"ws_other"},
		"X_api_key_mode":     {"TEST"},
		"X-Keygate-Identity": {"forged"},
	}), "")
	if e.exited() {
		t.Fatalf("rejected: %s", e.ClientRes.Body)
	}
	calls := e.Calls()
	if len(calls) != 8 || !slices.Equal(calls[:3], []string{pdkGetHeaders, pdkAuth, pdkSetHeaders}) {
		t.Fatalf("calls %q, want get_headers, authenticate, set_headers, then 5 clear_header", calls)
	}
	for _, c := range calls[3:] {
		if c != pdkClearHeader {
			t.Fatalf("calls %q", calls)
		}
	}
	up := e.ServiceReq.Headers
	if got := up.Values(HeaderAPIKeyID); len(got) != 1 || got[0] != k.APIKeyID {
		t.Errorf("upstream X-Api-Key-Id %q", got)
	}
	for name := range up {
		if reservedHeader(name) && !replacedUpstream(name) {
			t.Errorf("client header %s reached the upstream: %q", name, up[name])
		}
	}
	if len(e.Logs()) != 0 {
		t.Errorf("an allowed request logged through kong.log: %q", e.Logs())
	}
}

// TestManageStripsReserved: the same on a management route, where only
// X-Keygate-Identity is replaced.
func TestManageStripsReserved(t *testing.T) {
	t.Parallel()
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, keys().rsa, claims(), "")
	e := serve(t, manageConfig(), manageRequest(tok, "/web/v1/workspaces/ws1/api-keys", "code-partner", http.Header{
		"X-Keygate-Identity": {"forged"},
		"X_keygate_identity": {"forged"},
		"X-Api-Key-Mode":     {"TEST"},
	}), "")
	if e.exited() {
		t.Fatalf("rejected: %s", e.ClientRes.Body)
	}
	wantCalls(t, e, pdkGetHeaders, pdkGetPath, pdkGetMethod, pdkClearHeader, pdkClearHeader, pdkSetHeaders, pdkClearHeader)
	up := e.ServiceReq.Headers
	if got := up.Values(identity.Header); len(got) != 1 || got[0] == "forged" {
		t.Errorf("identity header %q", got)
	}
	for name := range up {
		if reservedHeader(name) && name != identity.Header {
			t.Errorf("client header %s reached the sidecar: %q", name, up[name])
		}
	}
}

// FuzzReservedHeader: reservedHeader, which reads client header names on
// every allowed request without allocating, agrees with the plain
// definition written with the strings package.
func FuzzReservedHeader(f *testing.F) {
	for _, s := range []string{"x-keygate-identity", "X_Api_Key_Id", "x-workspace-id", "x-api-key", "x-keygate-", "", "x_API-key_MODE", "X-Keygate-\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		folded := strings.ReplaceAll(strings.Map(func(r rune) rune {
			if 'A' <= r && r <= 'Z' {
				return r + 'a' - 'A'
			}
			return r
		}, name), "_", "-")
		want := (strings.HasPrefix(folded, "x-keygate-") && len(folded) > len("x-keygate-")) ||
			folded == "x-api-key-id" || folded == "x-workspace-id" || folded == "x-api-key-mode"
		if got := reservedHeader(name); got != want {
			t.Fatalf("reservedHeader(%q) = %v, want %v", name, got, want)
		}
	})
}
