package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/keygate/keygate/api"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/store"
)

var (
	gwSecret   = []byte("test-gateway-secret-0123456789")
	adminToken = []byte("test-admin-token-0123456789")
)

type harness struct {
	t    *testing.T
	srv  *sidecar.Server
	base string
	logs *lockedWriter
	db   string
}

// with returns the harness reporting to t (for subtests).
func (h *harness) with(t *testing.T) *harness {
	c := *h
	c.t = t
	return &c
}

type option func(*sidecar.Config)

// start runs a real sidecar on a real loopback socket and bbolt file (a
// new one, unless an option sets the Store).
func start(t *testing.T, opts ...option) *harness {
	t.Helper()
	logs := &lockedWriter{w: &bytes.Buffer{}}
	db := filepath.Join(t.TempDir(), "keygate.db")
	cfg := sidecar.Config{
		Listen:        "127.0.0.1:0",
		GatewaySecret: gwSecret,
		AdminToken:    adminToken,
		Logger:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Store == nil {
		cfg.Store = openBolt(t, db)
	}
	srv, err := sidecar.Start(cfg)
	if err != nil {
		t.Fatalf("start sidecar: %v", err)
	}
	h := &harness{t: t, srv: srv, base: "http://" + srv.Addr().String(), logs: logs, db: db}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return h
}

// openBolt opens the bbolt file at path.
func openBolt(t testing.TB, path string) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

type resp struct {
	status int
	header http.Header
	env    envelope.Envelope
	raw    []byte
}

func (r resp) data(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.env.Data, v); err != nil {
		t.Fatalf("decode data %s: %v", r.raw, err)
	}
}

// do sends one request; auth is "admin", "" (none) or a raw header value.
func (h *harness) do(method, path, auth string, body string, hdr ...string) resp {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case auth == "admin":
		req.Header.Set("Authorization", "Bearer "+string(adminToken))
	case strings.HasPrefix(auth, "assert:"):
		req.Header.Set(identity.Header, strings.TrimPrefix(auth, "assert:"))
	case strings.HasPrefix(auth, "claims:"):
		var c identity.Claims
		json.Unmarshal([]byte(strings.TrimPrefix(auth, "claims:")), &c)
		c.Path, c.Method = req.URL.EscapedPath(), method
		tok, err := identity.Sign(gwSecret, c, time.Now(), time.Minute)
		if err != nil {
			h.t.Fatal(err)
		}
		req.Header.Set(identity.Header, tok)
	case auth != "":
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if err := checkOpenAPI(req, res, raw); err != nil {
		h.t.Fatalf("%s %s: response %d does not match api/openapi.yaml: %v\nbody: %.2000s", method, path, res.StatusCode, err, raw)
	}
	if strings.HasPrefix(req.URL.Path, "/web/v1/") &&
		(res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("X-Content-Type-Options") != "nosniff") {
		// Every management answer, whatever its route, method or outcome.
		h.t.Fatalf("%s %s: %d without Cache-Control: no-store and X-Content-Type-Options: nosniff: %v", method, path, res.StatusCode, res.Header)
	}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.env); err != nil {
			h.t.Fatalf("%s %s: body is not an envelope: %s", method, path, raw)
		}
		if r.env.Version != envelope.Version || r.env.Timestamp == 0 || r.env.RequestID == "" ||
			r.env.RequestID != res.Header.Get("X-Request-Id") || r.env.Success != (r.env.Code == envelope.OK) ||
			(r.env.Code.Status() != res.StatusCode && !(r.env.Code == envelope.OK && res.StatusCode == 201)) {
			h.t.Fatalf("%s %s: bad envelope %d %s", method, path, res.StatusCode, raw)
		}
	}
	return r
}

func (h *harness) expect(r resp, code envelope.Code) {
	h.t.Helper()
	if r.env.Code != code || (r.status != code.Status() && !(code == envelope.OK && r.status == 201)) {
		h.t.Fatalf("got %d %s, want %s: %s", r.status, r.env.Code, code, r.raw)
	}
}

type keyObj struct {
	APIKeyID    string   `json:"apiKeyId"`
	Secret      string   `json:"secret"`
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Mode        string   `json:"mode"`
	Scopes      []string `json:"scopes"`
	IPWhitelist []string `json:"ipWhitelist"`
	CreatedAt   string   `json:"createdAt"`
	ExpiresAt   string   `json:"expiresAt"`
	RevokedAt   string   `json:"revokedAt"`
	LastUsedAt  *string  `json:"lastUsedAt"`
	SecretHint  string   `json:"secretHint"`
}

func (h *harness) create(ws, body string) keyObj {
	h.t.Helper()
	r := h.do("POST", "/web/v1/workspaces/"+ws+"/api-keys", "admin", body)
	h.expect(r, envelope.OK)
	var k keyObj
	r.data(h.t, &k)
	return k
}

type verifyData struct {
	Allow       bool     `json:"allow"`
	DenyCode    string   `json:"denyCode"`
	APIKeyID    string   `json:"apiKeyId"`
	WorkspaceID string   `json:"workspaceId"`
	Mode        string   `json:"mode"`
	Scopes      []string `json:"scopes"`
	IPWhitelist []string `json:"ipWhitelist"`
	ExpiresAt   string   `json:"expiresAt"`
}

func (h *harness) verify(key, ip string, scopes []string, modes ...string) verifyData {
	h.t.Helper()
	if len(modes) == 0 {
		modes = []string{"LIVE"}
	}
	body, _ := json.Marshal(map[string]any{"key": key, "clientIp": ip, "requiredScopes": scopes, "allowedModes": modes})
	r := h.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), string(body))
	h.expect(r, envelope.OK)
	var v verifyData
	r.data(h.t, &v)
	return v
}

func (h *harness) count(ws string) int {
	h.t.Helper()
	r := h.do("GET", "/web/v1/workspaces/"+ws+"/api-keys?limit=100", "admin", "")
	h.expect(r, envelope.OK)
	var page struct {
		Items []keyObj `json:"items"`
	}
	r.data(h.t, &page)
	return len(page.Items)
}

// assertion returns claims that do() signs for the path of the request it
// sends, as the plugin does.
func assertion(t *testing.T, c identity.Claims) string {
	t.Helper()
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return "claims:" + string(js)
}

func owner(t *testing.T, ws, portal string, test bool) string {
	return assertion(t, identity.Claims{Subject: "user-1", WorkspaceID: ws, Role: identity.RoleOwner, Portal: portal, RequestID: "rq", AllowTestMode: test})
}

var _ = store.ActionCreated

// contract is api/openapi.yaml, loaded and validated once for every test.
var contract = sync.OnceValues(func() (*openapiContract, error) {
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} { // the console's files
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.Spec)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return &openapiContract{doc: doc, router: router}, nil
})

type openapiContract struct {
	doc    *openapi3.T
	router routers.Router
}

// unknownPaths are the paths the tests request on purpose to get 404/4040 for
// a route the API does not have; they are the only requests with no
// operation in the document. Their answer must still be an error envelope.
var unknownPaths = map[string]bool{
	"/nope":                         true,
	"/web/v1/workspaces/ws_a/other": true,
}

// checkOpenAPI validates one response against the operation of its request
// in api/openapi.yaml: status documented, headers, content type and body
// schema. A method the path does not have is checked against another
// operation of the same path, where 405 is documented.
func checkOpenAPI(req *http.Request, res *http.Response, raw []byte) error {
	c, err := contract()
	if err != nil {
		return err
	}
	route, params, err := c.router.FindRoute(req)
	if errors.Is(err, routers.ErrMethodNotAllowed) && res.StatusCode == http.StatusMethodNotAllowed {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			alt := req.Clone(context.Background())
			alt.Method = m
			if route, params, err = c.router.FindRoute(alt); err == nil {
				req = alt
				break
			}
		}
	}
	if errors.Is(err, routers.ErrPathNotFound) && unknownPaths[req.URL.Path] {
		if res.StatusCode != http.StatusNotFound {
			return fmt.Errorf("unknown path answered %d, want 404", res.StatusCode)
		}
		var body any
		if err := json.Unmarshal(raw, &body); err != nil {
			return err
		}
		return c.doc.Components.Schemas["ErrorEnvelope"].Value.VisitJSON(body, openapi3.EnableJSONSchema2020())
	}
	if err != nil {
		return fmt.Errorf("no operation for %s %s: %w", req.Method, req.URL.Path, err)
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	return openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 res.StatusCode,
		Header:                 res.Header,
		Body:                   io.NopCloser(bytes.NewReader(raw)),
		Options:                opts,
	})
}
