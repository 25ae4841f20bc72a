package plugin

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/bridge"
	"github.com/Kong/go-pdk/bridge/bridgetest"
	"github.com/Kong/go-pdk/client"
	"github.com/Kong/go-pdk/log"
	"github.com/Kong/go-pdk/request"
	"github.com/Kong/go-pdk/response"
	service_request "github.com/Kong/go-pdk/service/request"
	"github.com/Kong/go-pdk/test"
	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/kongemu/kongemutest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	gwSecret = "test-gateway-secret-0123456789"
	hsSecret = "test-hmac-secret-for-jwt-0123456789-abcdef"
	issuer   = "https://idp.example.test"
	audience = "keygate"
)

func intp(v int) *int    { return &v }
func boolp(v bool) *bool { return &v }

var limiterSeq atomic.Int64

// newLimiterNS gives a test config limiter state of its own: the limiters
// are process-wide, and parallel tests must not see each other's failures.
func newLimiterNS() string { return "test-" + strconv.FormatInt(limiterSeq.Add(1), 10) }

// kongEnv is go-pdk's test environment with two additions: it records the
// PDK methods the plugin calls (each one a round trip to Kong) and answers
// kong.client.get_forwarded_ip with a chosen address (the test package
// always says 10.10.10.1).
type kongEnv struct {
	*test.TestEnv
	fwdIP  string
	mu     sync.Mutex
	calls  []string
	logs   []string // "<level>: <message>" of each kong.log.* call
	closed atomic.Bool
	// headers, when set, is the raw answer to kong.request.get_headers
	// (for what go-pdk's test environment cannot encode).
	headers []byte
}

func (e *kongEnv) Handle(method string, args []byte) []byte {
	e.mu.Lock()
	e.calls = append(e.calls, method)
	if level, ok := strings.CutPrefix(method, "kong.log."); ok {
		var l structpb.ListValue
		if err := proto.Unmarshal(args, &l); err == nil {
			var b strings.Builder
			for _, v := range l.Values {
				b.WriteString(v.GetStringValue())
			}
			e.logs = append(e.logs, level+": "+b.String())
		}
	}
	e.mu.Unlock()
	if method == "kong.request.get_headers" && e.headers != nil {
		return e.headers
	}
	if method == "kong.client.get_forwarded_ip" && e.fwdIP != "" {
		out, _ := proto.Marshal(bridge.WrapString(e.fwdIP))
		return out
	}
	return e.TestEnv.Handle(method, args)
}

// Errorf ignores the mock's complaint that the connection closed after
// the handler returned.
func (e *kongEnv) Errorf(format string, args ...any) {
	if e.closed.Load() {
		return
	}
	e.TestEnv.Errorf(format, args...)
}

func (e *kongEnv) Logs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.logs)
}

func (e *kongEnv) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

// serve runs one request through cfg's access phase over go-pdk's bridge
// and returns the environment: ClientRes is what Kong answers when the
// plugin exited, ServiceReq what Kong proxies otherwise.
func serve(t *testing.T, cfg *Config, req test.Request, fwdIP string) *kongEnv {
	t.Helper()
	return serveWith(t, req, fwdIP, func(k *pdk.PDK) { cfg.Access(k) })
}

func serveWith(t *testing.T, req test.Request, fwdIP string, handler func(*pdk.PDK)) *kongEnv {
	t.Helper()
	return serveRaw(t, req, fwdIP, nil, handler)
}

// serveRaw is serveWith with get_headers answered by rawHeaders when it is
// not nil.
func serveRaw(t *testing.T, req test.Request, fwdIP string, rawHeaders []byte, handler func(*pdk.PDK)) *kongEnv {
	t.Helper()
	if req.Method == "" {
		req.Method = "GET"
	}
	env, err := test.New(t, req)
	if err != nil {
		t.Fatal(err)
	}
	ke := &kongEnv{TestEnv: env, fwdIP: fwdIP, headers: rawHeaders}
	conn := bridgetest.MockFunc(ke)
	b := bridge.New(conn)
	k := &pdk.PDK{
		Client:         client.Client{PdkBridge: b},
		Request:        request.Request{PdkBridge: b},
		Response:       response.Response{PdkBridge: b},
		ServiceRequest: service_request.Request{PdkBridge: b},
		Log:            log.Log{PdkBridge: b},
	}
	handler(k)
	ke.closed.Store(true)
	conn.Close()
	return ke
}

// exited reports whether the plugin ended the request itself.
func (e *kongEnv) exited() bool { return slices.Contains(e.Calls(), "kong.response.exit") }

// wantReject checks a rejection: status, envelope and headers.
func wantReject(t *testing.T, e *kongEnv, code envelope.Code) envelope.Envelope {
	t.Helper()
	if !e.exited() {
		t.Fatalf("request was proxied; want %s", code)
	}
	if e.ClientRes.Status != code.Status() {
		t.Errorf("status = %d, want %d", e.ClientRes.Status, code.Status())
	}
	var env envelope.Envelope
	if err := json.Unmarshal(e.ClientRes.Body, &env); err != nil {
		t.Fatalf("body %q is not an envelope: %v", e.ClientRes.Body, err)
	}
	if env.Code != code || env.Success || env.Message != code.Message() || env.Version != envelope.Version || env.Data != nil {
		t.Errorf("envelope = %+v, want code %s %q", env, code, code.Message())
	}
	if env.RequestID == "" || e.ClientRes.Headers.Get("X-Request-Id") != env.RequestID {
		t.Errorf("requestId %q, X-Request-Id %q", env.RequestID, e.ClientRes.Headers.Get("X-Request-Id"))
	}
	if ct := e.ClientRes.Headers.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if d := time.Since(time.UnixMilli(env.Timestamp)); d < -time.Minute || d > time.Hour {
		t.Errorf("timestamp %d is off", env.Timestamp)
	}
	return env
}

func wantCalls(t *testing.T, e *kongEnv, want ...string) {
	t.Helper()
	if got := e.Calls(); !slices.Equal(got, want) {
		t.Errorf("PDK calls = %q, want %q", got, want)
	}
}

const (
	pdkGetHeaders  = "kong.request.get_headers"
	pdkGetPath     = "kong.request.get_path"
	pdkGetMethod   = "kong.request.get_method"
	pdkExit        = "kong.response.exit"
	pdkAuth        = "kong.client.authenticate"
	pdkSetHeaders  = "kong.service.request.set_headers"
	pdkClearHeader = "kong.service.request.clear_header"
	pdkFwdIP       = "kong.client.get_forwarded_ip"
	pdkLogErr      = "kong.log.err"
	pdkLogWarn     = "kong.log.warn"
)

// Test keys, generated once.
var keys = sync.OnceValue(func() *testKeys {
	k := &testKeys{}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	k.rsaPEM = pemOf(&k.rsa.PublicKey)
	k.ecPEM = pemOf(&k.ec.PublicKey)
	k.edPEM = pemOf(k.ed.Public())
	return k
})

type testKeys struct {
	rsa, rsa2            *rsa.PrivateKey
	ec                   *ecdsa.PrivateKey
	ed                   ed25519.PrivateKey
	rsaPEM, ecPEM, edPEM string
}

func pemOf(pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// claims returns valid claims for an OWNER of ws1 and MEMBER of ws2.
func claims(mut ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"sub":        "user-1",
		"iss":        issuer,
		"aud":        audience,
		"iat":        now.Unix(),
		"exp":        now.Add(5 * time.Minute).Unix(),
		"workspaces": map[string]any{"ws1": "OWNER", "ws2": "MEMBER"},
	}
	for _, m := range mut {
		m(c)
	}
	return c
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func manageConfig(mut ...func(*Config)) *Config {
	k := keys()
	c := &Config{
		RouteRole:     RoleManage,
		GatewaySecret: gwSecret,
		JWTAlgorithms: []string{"HS256", "RS256", "ES256", "EdDSA"},
		JWTSecret:     hsSecret,
		JWTPublicKeys: []string{k.rsaPEM, k.ecPEM, k.edPEM},
		JWTIssuer:     issuer,
		JWTAudience:   audience,
		PortalCodes:   map[string]string{"code-partner": "PARTNER", "code-merchant": "MERCHANT"},
		limiterNS:     newLimiterNS(),
	}
	for _, m := range mut {
		m(c)
	}
	return c
}

func manageRequest(auth, path, portal string, extra http.Header) test.Request {
	h := http.Header{}
	if auth != "" {
		h.Set("Authorization", auth)
	}
	if portal != "" {
		h.Set("X-PORTAL-ACCESS-CODE", portal)
	}
	for k, v := range extra {
		h[k] = v
	}
	return test.Request{Method: "GET", Url: "http://kong.test" + path, Headers: h}
}

// captureLogs sends the plugin's log to a buffer; tests that use it must
// not run in parallel with each other.
func captureLogs(t *testing.T) *kongemutest.LogBuffer {
	lb := &kongemutest.LogBuffer{}
	old := logger()
	SetLogger(slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { SetLogger(old) })
	return lb
}

// silentListener accepts connections and never answers: a sidecar slower
// than any timeout.
func silentListener(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = &atomic.Int64{}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), accepted
}

func TestMain(m *testing.M) {
	// Keep test output readable: warnings and errors only (tests that look
	// at the log capture it themselves).
	SetLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}
