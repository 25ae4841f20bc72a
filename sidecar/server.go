// Package sidecar is keygate's key service: the management API reached
// through Kong, the verify API the plugin calls, health and metrics, served
// by fasthttp over TCP or a unix socket.
//
// Trust (docs/CONTRACT.md §9): a management request is served only with a valid
// X-Keygate-Identity assertion signed with the gateway secret (the plugin
// checked the caller's JWT, role and portal) or with the admin token; verify
// only with the gateway secret. The workspace always comes from the path and
// must equal the assertion's.
//
// The sidecar owns the verify cache (cache.go: ristretto, a table of hot
// entries and each key's verify answer rendered once) and the metering of
// store calls; the store it is handed (Config.Store: bbolt or PostgreSQL,
// opened by cmd/keygate-sidecar) only stores. A store that reports changes
// made by other sidecars (Subscribe) invalidates the cache through
// Server.invalidate.
//
// Invariants: every response is one envelope with the request id; every
// management response (a secret's above all) has Cache-Control: no-store
// and X-Content-Type-Options: nosniff; a failed request
// stores nothing; nothing here logs a secret, a token or an Authorization
// header.
package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/api"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/store"
	"github.com/valyala/fasthttp"
)

// storeTimeout bounds every store call of one request.
const storeTimeout = 5 * time.Second

// MaxBodySize is the largest request body accepted (413/4130 above it).
const MaxBodySize = 64 << 10

// Config of a sidecar. Zero values take the defaults documented per field.
type Config struct {
	// Listen is host:port or unix:/path.sock (default 127.0.0.1:8080).
	Listen string
	// TLSCert and TLSKey, when set (both), are PEM files of the API
	// listener's certificate (chain) and key: it then serves only TLS (1.2
	// or later). The pair is loaded again when either file changes and on
	// ReloadTLS (SIGHUP), without a restart; a pair that does not load is
	// logged and the previous one kept.
	TLSCert, TLSKey string
	// Reload, when set, makes Run load the TLS files again on every value
	// received (the sidecar command delivers SIGHUP there).
	Reload <-chan os.Signal
	// ConsoleHandover makes the owner console read a token, workspace and
	// portal code handed over in its URL fragment (the demo's ready-made
	// link). Off by default and in production: a link could otherwise
	// switch an owner's console to another's token (login CSRF).
	ConsoleHandover bool
	// MetricsListen, when set (host:port or unix:/path.sock), serves
	// GET /metrics there and nowhere else: the API port answers it 404.
	// Empty: /metrics is on the API port.
	MetricsListen string
	// Store is the key store (required): a *store.Bolt or *store.Postgres
	// opened by the caller. The sidecar owns it from Start on: Shutdown
	// (and a failed Start) closes it.
	Store store.Store
	// Scopes, when non-nil, is the catalog of allowed scope codes.
	Scopes map[string]bool
	// GatewaySecret is shared with the plugin (required).
	GatewaySecret []byte
	// AdminToken enables direct admin access to the management API.
	AdminToken []byte
	// Cache sizes the verify cache (default 16 MiB).
	Cache CacheOptions
	// ShutdownTimeout bounds draining on stop (default 10 s).
	ShutdownTimeout time.Duration
	// ReadTimeout bounds reading one request, headers and body (default
	// 10 s): a slow-loris client is cut off. WriteTimeout bounds writing a
	// response (default 10 s); IdleTimeout a keep-alive connection between
	// requests (default 120 s). MaxConns caps open connections (default
	// 16384); MaxHeaderBytes the request line and headers (default 16 KiB).
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxConns, MaxHeaderBytes               int
	// MaxAssertions bounds how many identity assertion ids (jti) the
	// sidecar remembers to refuse a replay (default DefaultMaxAssertions);
	// when that many unexpired ones are held, a management request with an
	// assertion answers 503/5030 until some expire.
	MaxAssertions int
	// UsageFlushInterval is how often lastUsedAt is written (default 30 s).
	UsageFlushInterval time.Duration
	Logger             *slog.Logger
}

// LoadScopes reads a scope catalog: one code a line; blank lines and lines
// starting with # are skipped; every code must be valid.
func LoadScopes(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scopes file: %w", err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !apikey.ValidScope(line) {
			return nil, fmt.Errorf("scopes file %s:%d: %q is not a valid scope code", path, n, clip(line))
		}
		out[line] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scopes file %s: %w", path, err)
	}
	return out, nil
}

// invalidationSource is a store shared with other sidecars (PostgreSQL): it
// calls invalidate whenever cached lookups may be stale, so that a key
// revoked or rolled through any sidecar is rejected by this one within 1 s:
// with the key id when one key changed, with "" when anything may have.
type invalidationSource interface {
	Subscribe(ctx context.Context, invalidate func(id string))
}

// stalenessBound is a store whose cached view may lag a change made
// elsewhere by up to MaxStaleness (PostgreSQL shared by several sidecars).
// The verify answer tells the plugin to cache for less, so that the sum
// stays within the revocation bound.
type stalenessBound interface {
	MaxStaleness() time.Duration
}

// Server is a running sidecar.
type Server struct {
	cfg Config
	// store is what every handler reads and writes through: cache, in
	// front of the metered cfg.Store.
	store store.Store
	cache *cache
	log   *slog.Logger
	srv   *fasthttp.Server
	ln    net.Listener
	// The metrics listener (Config.MetricsListen), nil when /metrics is
	// on the API port.
	metricsSrv *fasthttp.Server
	metricsLn  net.Listener
	metrics    *metrics
	push       *pushHub // the invalidation streams (push.go)
	usage      *usage
	seen       *seenIDs      // identity assertions accepted, to refuse replays
	certs      *certReloader // nil without TLS
	cacheMs    int           // how long the plugin may cache a verify answer
	// verifyTails remembers the parameters of verify bodies by what follows
	// the key (see parseVerify), at most maxVerifyTails of them.
	// The map is replaced, never modified, once stored (a read takes no
	// lock); tailsMu orders the writers.
	tailsMu     sync.Mutex
	verifyTails atomic.Pointer[map[string]*verifyParams]
	done        chan error
	stop        sync.Once
}

func (c *Config) defaults() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 16 << 10
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	if c.MaxAssertions <= 0 {
		c.MaxAssertions = DefaultMaxAssertions
	}
	if c.UsageFlushInterval <= 0 {
		c.UsageFlushInterval = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Store == nil {
		return errors.New("a key store is required")
	}
	return c.Validate()
}

// Validate reports a configuration the sidecar refuses to start with (its
// secrets, a TLS certificate without a key), without opening anything, so
// that a command line can fail before it logs or opens the store.
func (c *Config) Validate() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
	}
	if len(c.GatewaySecret) == 0 {
		return errors.New("gateway secret is required (KEYGATE_GATEWAY_SECRET or --gateway-secret-file)")
	}
	if len(c.GatewaySecret) < 16 {
		return errors.New("gateway secret must be at least 16 bytes")
	}
	if len(c.AdminToken) != 0 && len(c.AdminToken) < 16 {
		return errors.New("admin token must be at least 16 bytes")
	}
	if len(c.AdminToken) != 0 && string(c.AdminToken) == string(c.GatewaySecret) {
		return errors.New("admin token must differ from the gateway secret (the plugin holds the secret)")
	}
	return nil
}

// Start puts the verify cache in front of cfg.Store, listens and serves in
// the background. A store that reports changes made elsewhere (Subscribe)
// invalidates the cache through it; one whose view may lag
// (MaxStaleness) shortens the time the plugin may cache an answer.
func Start(cfg Config) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		if cfg.Store != nil {
			cfg.Store.Close()
		}
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, push: newPushHub(), done: make(chan error, 1), seen: newSeenIDs(cfg.MaxAssertions)}
	s.metrics = newMetrics(s.push)
	if cfg.TLSCert != "" {
		var err error
		if s.certs, err = newCertReloader(cfg.TLSCert, cfg.TLSKey, cfg.Logger); err != nil {
			cfg.Store.Close()
			return nil, err
		}
	}
	c, err := newCache(metered{cfg.Store, s.metrics}, cfg.Cache)
	if err != nil {
		cfg.Store.Close()
		return nil, err
	}
	s.cache, s.store = c, c
	// A miss: a fact that will expire gets its push timer (push.go).
	c.onMiss = func(f *apikey.Facts) {
		if f.ExpiresAt != 0 && !f.Revoked {
			s.push.watchExpiry(f.APIKeyID, f.ExpiresAt)
		}
	}
	if src, ok := cfg.Store.(invalidationSource); ok {
		src.Subscribe(context.Background(), s.invalidate) // runs until the store is closed
	}
	s.cacheMs = apikey.RevocationBound
	if sb, ok := cfg.Store.(stalenessBound); ok {
		s.cacheMs = max(apikey.RevocationBound-int(sb.MaxStaleness()/time.Millisecond), 1)
	}
	ln, err := listen(cfg.Listen)
	if err != nil {
		s.store.Close()
		return nil, err
	}
	if s.certs != nil {
		ln = tls.NewListener(ln, s.certs.serverTLS())
	} else if !localListener(ln.Addr()) {
		s.log.Warn("listening beyond loopback without TLS: the gateway secret and identity assertions cross the network in clear; set --tls-cert and --tls-key", "addr", ln.Addr().String())
	}
	s.ln = ln
	if cfg.MetricsListen != "" {
		if s.metricsLn, err = listen(cfg.MetricsListen); err != nil {
			ln.Close()
			s.store.Close()
			return nil, err
		}
	}
	s.usage = newUsage(s.store, cfg.UsageFlushInterval, s.log)
	s.srv = &fasthttp.Server{
		Handler:      s.handle,
		ErrorHandler: s.handleError,
		Name:         "keygate-sidecar",
		// Bodies up to 1 MiB are read so that the answer to one over
		// MaxBodySize is a clean 413 envelope rather than a reset; larger
		// ones get the same answer from handleError and a closed connection.
		MaxRequestBodySize:            16 * MaxBodySize,
		ReadBufferSize:                cfg.MaxHeaderBytes,
		ReadTimeout:                   cfg.ReadTimeout,
		WriteTimeout:                  cfg.WriteTimeout,
		IdleTimeout:                   cfg.IdleTimeout,
		Concurrency:                   cfg.MaxConns,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{s.log},
		// fasthttp's parse errors would otherwise quote the raw request,
		// Authorization header and all.
		SecureErrorLogMessage: true,
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	s.log.Info("sidecar listening", "addr", ln.Addr().String(), "adminAPI", len(cfg.AdminToken) > 0)
	if s.metricsLn != nil {
		s.metricsSrv = &fasthttp.Server{
			Handler: s.handleMetricsPort, Name: "keygate-sidecar", ReadTimeout: cfg.ReadTimeout,
			WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout, Concurrency: 256,
			NoDefaultServerHeader: true, NoDefaultContentType: true, CloseOnShutdown: true,
			Logger: fasthttpLogger{s.log}, SecureErrorLogMessage: true,
		}
		go func() {
			if err := s.metricsSrv.Serve(s.metricsLn); err != nil {
				s.log.Error("metrics listener stopped", "err", err)
			}
		}()
		s.log.Info("metrics listening", "addr", s.metricsLn.Addr().String())
	}
	return s, nil
}

// handleMetricsPort serves the metrics listener: GET /metrics, nothing else.
func (s *Server) handleMetricsPort(ctx *fasthttp.RequestCtx) {
	rid := requestID(ctx)
	if string(ctx.Request.URI().PathOriginal()) != "/metrics" {
		reply(ctx, rid, envelope.NotFound, "Not found", nil)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		methodNotAllowed(ctx, rid, "GET, HEAD")
		return
	}
	ctx.Response.Header.Set("X-Request-Id", rid)
	s.handleInfo(ctx, rid, "/metrics")
}

func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path) // a stale socket of an earlier run
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// invalidate is called by the store (Subscribe) whenever a key may have
// changed elsewhere (id, or "" for any key): cached verify answers are
// stale from then on, here and in the plugins that hear the stream.
func (s *Server) invalidate(id string) {
	s.cache.invalidate()
	if id == "" {
		s.push.all()
	} else {
		s.push.key(id)
	}
}

// localListener reports whether a listener is a unix socket or on a
// loopback address.
func localListener(a net.Addr) bool {
	switch a := a.(type) {
	case *net.UnixAddr:
		return true
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	}
	return false
}

// ReloadTLS loads the TLS certificate and key files again (the sidecar
// command does it on SIGHUP). Without TLS it does nothing; on failure the
// previous certificate is kept and the error returned.
func (s *Server) ReloadTLS() error {
	if s.certs == nil {
		return nil
	}
	return s.certs.Reload()
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// MetricsAddr is the metrics listener's address, nil without one.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// Shutdown drains in-flight requests, flushes usage and closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stop.Do(func() {
		s.push.close() // the streams end, so that the server can drain
		err = s.srv.ShutdownWithContext(ctx)
		if s.metricsSrv != nil {
			s.metricsSrv.ShutdownWithContext(ctx)
			if u, ok := s.metricsLn.Addr().(*net.UnixAddr); ok {
				os.Remove(u.Name)
			}
		}
		s.usage.close()
		if cerr := s.store.Close(); err == nil {
			err = cerr
		}
		if u, ok := s.ln.Addr().(*net.UnixAddr); ok {
			os.Remove(u.Name)
		}
	})
	return err
}

// Run starts a sidecar and serves until ctx is done, then shuts down.
func Run(ctx context.Context, cfg Config) error {
	s, err := Start(cfg)
	if err != nil {
		return err
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-cfg.Reload:
			s.ReloadTLS() // logs its outcome
		case err := <-s.done:
			s.Shutdown(context.Background())
			return fmt.Errorf("serve: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	return s.Shutdown(sctx)
}

// fasthttpLogger sends fasthttp's own messages (connection errors) to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", fmt.Sprintf(format, args...))
}

// requestID returns the client's X-Request-Id when it is sane, else a new one.
func requestID(ctx *fasthttp.RequestCtx) string {
	if v := ctx.Request.Header.Peek("X-Request-Id"); envelope.ValidRequestID(v) {
		return string(v)
	}
	return envelope.NewRequestID()
}

// reply writes one envelope.
func reply(ctx *fasthttp.RequestCtx, rid string, code envelope.Code, msg string, data []byte) {
	replyAt(ctx, time.Now(), rid, code, msg, data)
}

// replyAt is reply with the envelope's timestamp given.
func replyAt(ctx *fasthttp.RequestCtx, now time.Time, rid string, code envelope.Code, msg string, data []byte) {
	ctx.SetStatusCode(code.Status())
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.Header.Set("X-Request-Id", rid)
	ctx.SetBody(envelope.Append(ctx.Response.Body()[:0], now, code, msg, rid, data))
}

// replyErr writes the envelope of err: an *envelope.Error as it says, any
// other error as 5000 with the detail only in the log.
func (s *Server) replyErr(ctx *fasthttp.RequestCtx, rid string, err error) envelope.Code {
	var ee *envelope.Error
	if errors.As(err, &ee) {
		reply(ctx, rid, ee.Code, ee.Message(), nil)
		return ee.Code
	}
	code := storeCode(err)
	if code == envelope.Internal {
		s.log.Error("request failed", "requestId", rid, "path", string(ctx.Path()), "err", err)
	}
	reply(ctx, rid, code, "", nil)
	return code
}

func storeCode(err error) envelope.Code {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return envelope.NotFound
	case errors.Is(err, store.ErrFull):
		return envelope.StorageFull
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrUnavailable):
		return envelope.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return envelope.Timeout
	}
	return envelope.Internal
}

func (s *Server) handleError(ctx *fasthttp.RequestCtx, err error) {
	rid := requestID(ctx)
	var code envelope.Code
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		code = envelope.TooLarge
	case errors.Is(err, fasthttp.ErrTimeout):
		code = envelope.Timeout
	default:
		code = envelope.BadRequest
	}
	if isManagePath(ctx) {
		manageHeaders(ctx)
	}
	reply(ctx, rid, code, "", nil)
	ctx.SetConnectionClose()
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	rid := requestID(ctx)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in handler", "requestId", rid, "panic", fmt.Sprint(r))
			reply(ctx, rid, envelope.Internal, "", nil)
		}
	}()
	if len(ctx.Request.Body()) > MaxBodySize {
		if isManagePath(ctx) {
			manageHeaders(ctx)
		}
		reply(ctx, rid, envelope.TooLarge, "", nil)
		return
	}
	// Paths are served only as sent: fasthttp would decode and resolve a
	// percent-encoded or dot-segment path into another route (a gateway
	// route for /console must not reach /metrics as /console%2F..%2Fmetrics).
	if !canonicalPath(ctx.Request.URI().PathOriginal()) {
		if isManagePath(ctx) {
			manageHeaders(ctx)
		}
		reply(ctx, rid, envelope.NotFound, "Not found", nil)
		return
	}
	if string(ctx.Path()) == apikey.VerifyPath { // compared without a copy
		if !ctx.IsPost() {
			methodNotAllowed(ctx, rid, "POST")
			return
		}
		s.handleVerify(ctx, rid)
		return
	}
	if string(ctx.Path()) == InvalidationsPath {
		if !ctx.IsGet() {
			methodNotAllowed(ctx, rid, "GET")
			return
		}
		s.handleInvalidations(ctx, rid)
		return
	}
	path := string(ctx.Path())
	if path == "/metrics" && s.metricsLn != nil {
		// Served on the metrics listener only (Config.MetricsListen).
		reply(ctx, rid, envelope.NotFound, "Not found", nil)
		return
	}
	switch path {
	case "/healthz", "/readyz", "/metrics", "/openapi.yaml":
		if !ctx.IsGet() && !ctx.IsHead() {
			methodNotAllowed(ctx, rid, "GET, HEAD")
			return
		}
		ctx.Response.Header.Set("X-Request-Id", rid)
		s.handleInfo(ctx, rid, path)
		return
	}
	if path == "/console" || strings.HasPrefix(path, "/console/") {
		serveConsole(ctx, rid, path, s.cfg.ConsoleHandover) // the owner console, sidecar/console.go
		return
	}
	if rest, ok := strings.CutPrefix(path, "/web/v1/workspaces/"); ok {
		code := s.handleManage(ctx, rid, rest)
		s.metrics.countManage(code)
		return
	}
	reply(ctx, rid, envelope.NotFound, "Not found", nil)
}

// canonicalPath reports whether a raw request path is one that no
// normalization would change: no percent-encoding, no empty, "." or ".."
// segment, no backslash. No route of the sidecar needs anything else.
func canonicalPath(p []byte) bool {
	if len(p) == 0 || p[0] != '/' || bytes.ContainsAny(p, "%\\") || bytes.Contains(p, []byte("//")) {
		return false
	}
	for rest, found := p[1:], true; found; {
		var seg []byte
		seg, rest, found = bytes.Cut(rest, []byte("/"))
		if string(seg) == "." || string(seg) == ".." {
			return false
		}
	}
	return true
}

// handleInfo serves the operational endpoints: health, readiness, metrics
// and the OpenAPI document.
func (s *Server) handleInfo(ctx *fasthttp.RequestCtx, rid, path string) {
	switch path {
	case "/healthz":
		ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ok\n")
	case "/readyz":
		if err := s.store.Ready(ctx); err != nil {
			reply(ctx, rid, envelope.Unavailable, "", nil)
			return
		}
		ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ready\n")
	case "/metrics":
		s.metrics.serve(ctx) // its Content-Type is the format the scraper asked for
	case "/openapi.yaml":
		ctx.Response.Header.SetContentType("application/yaml")
		ctx.SetBody(api.Spec)
	}
}

func methodNotAllowed(ctx *fasthttp.RequestCtx, rid, allow string) envelope.Code {
	ctx.Response.Header.Set("Allow", allow)
	reply(ctx, rid, envelope.MethodNotAllowed, "", nil)
	return envelope.MethodNotAllowed
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(ctx *fasthttp.RequestCtx) []byte {
	tok, _ := identity.Bearer(ctx.Request.Header.Peek("Authorization"))
	return tok
}

func equalSecret(got, want []byte) bool {
	return len(want) > 0 && subtle.ConstantTimeCompare(got, want) == 1
}
