package plugin

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/apikey"
)

// Route roles.
const (
	RoleManage  = "manage"
	RoleEnforce = "enforce"
)

// Environment variables that may carry the gateway secret when the config
// does not. With real Kong they must be in the environment of Kong's master
// process and listed for nginx (kong.conf `nginx_main_env = KEYGATE_GATEWAY_SECRET`),
// since nginx drops every other variable; the plugin server inherits it.
const (
	EnvGatewaySecret     = "KEYGATE_GATEWAY_SECRET"
	EnvGatewaySecretFile = "KEYGATE_GATEWAY_SECRET_FILE"
)

// Defaults of the configuration table (docs/CONTRACT.md §8). They are applied in one
// place, resolve; schema.lua carries the same values for Kong.
const (
	DefaultSidecarURL       = "http://127.0.0.1:8080"
	DefaultSidecarTimeoutMS = 1000
	DefaultLeewaySeconds    = 30
	DefaultRolesClaim       = "workspaces"
	DefaultCacheTTLMS       = 1000
	// DefaultCacheTTLPushedMS is how long facts live while the invalidation
	// stream is live (docs/REVOCATION.md).
	DefaultCacheTTLPushedMS = 300000
	// Failed-verification limiter (both roles): a client IP, or an API key
	// id, may fail DefaultFailureBurst times at once, then one more time
	// per 60/DefaultFailureLimitPerMinute seconds.
	DefaultFailureLimitPerMinute = 30
	DefaultFailureBurst          = 20
)

// Limits of the configuration.
const (
	// MaxSidecarTimeoutMS caps sidecar_timeout_ms far below the 60 s Kong
	// waits for the plugin's answer to an event (nginx's default
	// lua_socket_read_timeout: Rpc:call in kong/runloop/plugin_servers
	// pb_rpc.lua opens the socket with ngx.socket.connect and sets no
	// timeout): past it Kong answers its own 500 instead of our 504/5040. A key
	// service that needs over 10 s to verify a key is down for the
	// client anyway.
	MaxSidecarTimeoutMS = 10000
	MaxLeewaySeconds    = 600
	MaxCacheTTLMS       = 1000 // the revocation bound of docs/CONTRACT.md §10.1
	MaxCacheTTLPushedMS = 3600000
	MinGatewaySecretLen = 16
	MinHMACSecretLen    = 32
	MaxFailureLimit     = 60000 // failures per minute
	MaxFailureBurst     = 10000
)

var (
	defaultTestModePortals = []string{"PARTNER"}
	defaultKeyHeaders      = []string{"Authorization", "X-API-Key"}
	defaultAllowedModes    = []string{"LIVE"}
)

// Config is the plugin's configuration, one value per plugin instance (route).
// Its exported fields are the schema Kong sees (`keygate -dump`; see
// docs/CONTRACT.md §8), and schema.lua must list the same fields. Each
// field's tags role (manage, enforce or both), default (JSON; none when
// absent) and doc (one line) are the one source of the configuration table
// in the package doc and the README: after changing them run
// `go generate ./plugin` (configdoc_test.go checks both tables, schema.lua,
// and that each default tag is what resolve applies). A field that is
// absent or null takes its default; pointer fields tell "absent" from an
// explicit zero. An empty list that is given explicitly stays empty
// (test_mode_portals: [] means no portal may create TEST keys).
//
// The value is shared by every concurrent request of the route: nothing
// writes to it after Kong decoded it. The instance state is built once, on
// the first request, from a resolved copy of the fields.
type Config struct {
	// RouteRole is "manage" (key-management routes) or "enforce" (product
	// traffic). Required.
	RouteRole string `json:"route_role" role:"both" doc:"required: manage (key-management routes) or enforce (product traffic)"`
	// SidecarURL is where the verify API is: "https://host:port",
	// "unix:/path.sock", or "http://host:port" to a loopback host only
	// (plain http to another host is refused: the gateway secret would
	// cross the network in clear). Default http://127.0.0.1:8080. Enforce
	// only.
	SidecarURL string `json:"sidecar_url" role:"enforce" default:"\"http://127.0.0.1:8080\"" doc:"where the verify API is: https://host:port, unix:/abs/path.sock, or http://host:port to a loopback host only"`
	// SidecarCAFile is a PEM file of the CA certificates that an https
	// sidecar_url's certificate must chain to; empty means the system
	// roots. Only with https.
	SidecarCAFile string `json:"sidecar_ca_file" role:"enforce" doc:"PEM CA certificates an https sidecar_url's certificate must chain to; the system roots when empty"`
	// SidecarTimeoutMS bounds each call to the sidecar (1..10000, default
	// 1000: MaxSidecarTimeoutMS, far below Kong's 60 s plugin socket
	// timeout); over it the request answers 504/5040.
	SidecarTimeoutMS *int `json:"sidecar_timeout_ms" role:"enforce" default:"1000" doc:"per verify call, 1..10000 (far below Kong's 60 s plugin socket timeout); over it 504/5040"`
	// GatewaySecret is shared with the sidecar (at least 16 bytes). When
	// empty it is read from $KEYGATE_GATEWAY_SECRET, else from the file
	// named by $KEYGATE_GATEWAY_SECRET_FILE (under Kong either must be
	// listed in kong.conf's nginx_main_env). There is no default. A Kong
	// vault reference ({vault://…}) here or in any other field is refused:
	// Kong does not resolve references for a Go plugin.
	GatewaySecret string `json:"gateway_secret" role:"both" doc:"shared with the sidecar, at least 16 bytes; when empty, from $KEYGATE_GATEWAY_SECRET or the file $KEYGATE_GATEWAY_SECRET_FILE names (listed in kong.conf's nginx_main_env); a {vault://…} reference is refused"`
	// JWTAlgorithms lists the accepted JWT algorithms (HS256/384/512,
	// RS256/384/512, PS256/384/512, ES256/384/512, EdDSA). Required for
	// manage; nothing else is accepted, "none" never.
	JWTAlgorithms []string `json:"jwt_algorithms" role:"manage" doc:"required for manage: the accepted algorithms, a subset of HS256/384/512 RS256/384/512 PS256/384/512 ES256/384/512 EdDSA"`
	// JWTSecret is the HMAC secret (at least 32 bytes) for HS* algorithms.
	JWTSecret string `json:"jwt_secret" role:"manage" doc:"HMAC secret, at least 32 bytes; required with an HS* algorithm"`
	// JWTPublicKeys are PEM public keys (PKIX "PUBLIC KEY", PKCS#1 "RSA
	// PUBLIC KEY" or a "CERTIFICATE"): RSA ≥ 2048 bits, EC P-256/384/521,
	// Ed25519. A token is tried against every key of its algorithm's family.
	JWTPublicKeys []string `json:"jwt_public_keys" role:"manage" default:"[]" doc:"PEM public keys (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE): RSA ≥ 2048 bits, EC P-256/384/521, Ed25519"`
	// JWKSURL is a JWKS endpoint (https; plain http only to a loopback
	// address; a redirect is followed only to https); keys are cached by
	// kid, fetched again every JWKSMaxAge (60 s: a key removed from the
	// JWKS stops verifying within it), and on an unknown kid at most once
	// per 10 s. The fetching is keygate's own: docs/SECURITY.md says why.
	JWKSURL string `json:"jwks_url" role:"manage" doc:"JWKS endpoint (https, redirects to https only; http only to loopback), keys cached by kid, fetched again every 60 s (a removed key stops verifying within that) and on an unknown kid at most once per 10 s"`
	// JWTIssuer is checked against "iss" when set.
	JWTIssuer string `json:"jwt_issuer" role:"manage" doc:"iss must equal it when set"`
	// JWTAudience must be one of "aud" when set.
	JWTAudience string `json:"jwt_audience" role:"manage" doc:"aud must contain it when set"`
	// JWTLeewaySeconds is the clock skew allowed on exp/nbf/iat (0..600,
	// default 30).
	JWTLeewaySeconds *int `json:"jwt_leeway_seconds" role:"manage" default:"30" doc:"clock skew allowed on exp/nbf/iat, 0..600"`
	// RolesClaim names the claim {"<workspaceId>": "OWNER"|...} (default
	// "workspaces").
	RolesClaim string `json:"roles_claim" role:"manage" default:"\"workspaces\"" doc:"the JWT claim mapping workspace ids to roles, e.g. {\"ws_123\": \"OWNER\"}"`
	// PortalCodes maps X-PORTAL-ACCESS-CODE values to portal names.
	PortalCodes map[string]string `json:"portal_codes" role:"manage" default:"{}" doc:"X-PORTAL-ACCESS-CODE value → portal name"`
	// TestModePortals are the portals that may create TEST keys (default
	// ["PARTNER"]).
	TestModePortals []string `json:"test_mode_portals" role:"manage" default:"[\"PARTNER\"]" doc:"portals that may create TEST keys"`
	// KeyHeaders are the request headers an API key is read from (default
	// ["Authorization", "X-API-Key"]); Authorization must be "Bearer <key>".
	KeyHeaders []string `json:"key_headers" role:"enforce" default:"[\"Authorization\",\"X-API-Key\"]" doc:"headers the key is read from; Authorization must be \"Bearer <key>\""`
	// RequiredScopes must all be granted to the key. Required, non-empty,
	// for enforce.
	RequiredScopes []string `json:"required_scopes" role:"enforce" doc:"required for enforce, non-empty: every one must be granted"`
	// AllowedModes are the key modes the route accepts, "LIVE" and/or
	// "TEST" (default ["LIVE"]).
	AllowedModes []string `json:"allowed_modes" role:"enforce" default:"[\"LIVE\"]" doc:"key modes the route accepts: LIVE and/or TEST"`
	// HideCredentials removes the header that carried the key before
	// proxying (default true).
	HideCredentials *bool `json:"hide_credentials" role:"enforce" default:"true" doc:"remove the key's header before proxying"`
	// CacheTTLMS is how long key facts are cached (1..1000, default 1000):
	// a revoked or expired key is rejected within this bound.
	CacheTTLMS *int `json:"cache_ttl_ms" role:"enforce" default:"1000" doc:"how long key facts are cached, 1..1000: the revocation bound"`
	// CacheTTLPushedMS is how long key facts may be cached while the
	// plugin's invalidation stream from the sidecar is live (0..3600000,
	// default 300000; 0 turns the stream off). The moment the stream is not
	// provably live, every entry falls back to cache_ttl_ms counted from
	// when it was last confirmed (docs/REVOCATION.md).
	CacheTTLPushedMS *int `json:"cache_ttl_pushed_ms" role:"enforce" default:"300000" doc:"how long key facts are cached while the sidecar's invalidation stream is live, 0..3600000 (0: no stream); otherwise cache_ttl_ms applies"`
	// FailureLimitPerMinute is the failed-verification limiter's refill rate
	// (0..60000, default 30; 0 turns the limiter off): repeated invalid keys
	// (4012), calls from outside a key's whitelist (4034) or bad JWTs (4010)
	// from one client IP, and repeated denials (4033/4035) of one API key id
	// on a route policy, are answered 429/4290 with Retry-After, before the
	// key service is asked.
	FailureLimitPerMinute *int `json:"failure_limit_per_minute" role:"both" default:"30" doc:"failures forgiven per minute per client IP or key id, 0..60000; 0 turns the limiter off"`
	// FailureBurst is how many failures a client IP or key id may have at
	// once before the limiter answers 429 (1..10000, default 20).
	FailureBurst *int `json:"failure_burst" role:"both" default:"20" doc:"failures at once before 429/4290, 1..10000"`

	// Instance state, built once (go-pdk's reflection skips unexported
	// fields, and json leaves them alone).
	once sync.Once
	inst *instance
	err  error

	// Test hooks; nil means the real thing.
	clock  func() time.Time
	getenv func(string) string
	// limiterNS separates the process-wide limiter state of tests that
	// must not see each other's failures; "" in production.
	limiterNS string
}

// New is the constructor go-pdk calls for each plugin instance.
func New() interface{} { return &Config{} }

// settings is a Config with its defaults applied and its secret resolved.
type settings struct {
	role            string
	sidecarURL      string
	sidecarCAFile   string
	timeoutMS       int
	secret          []byte
	secretProblem   error
	algorithms      []string
	jwtSecret       []byte
	publicKeys      []string
	jwksURL         string
	issuer          string
	audience        string
	leewaySeconds   int
	rolesClaim      string
	portalCodes     map[string]string
	testModePortals []string
	keyHeaders      []string
	requiredScopes  []string
	allowedModes    []string
	hideCredentials bool
	cacheTTLMS      int
	cacheTTLPushed  int
	failurePerMin   int
	failureBurst    int
	limiterNS       string
}

// resolve applies the defaults: the one place they live.
func (c *Config) resolve() settings {
	s := settings{
		role:            c.RouteRole,
		sidecarURL:      c.SidecarURL,
		sidecarCAFile:   c.SidecarCAFile,
		timeoutMS:       intOr(c.SidecarTimeoutMS, DefaultSidecarTimeoutMS),
		algorithms:      c.JWTAlgorithms,
		jwtSecret:       []byte(c.JWTSecret),
		publicKeys:      c.JWTPublicKeys,
		jwksURL:         c.JWKSURL,
		issuer:          c.JWTIssuer,
		audience:        c.JWTAudience,
		leewaySeconds:   intOr(c.JWTLeewaySeconds, DefaultLeewaySeconds),
		rolesClaim:      c.RolesClaim,
		portalCodes:     c.PortalCodes,
		testModePortals: c.TestModePortals,
		keyHeaders:      c.KeyHeaders,
		requiredScopes:  c.RequiredScopes,
		allowedModes:    c.AllowedModes,
		hideCredentials: c.HideCredentials == nil || *c.HideCredentials,
		cacheTTLMS:      intOr(c.CacheTTLMS, DefaultCacheTTLMS),
		cacheTTLPushed:  intOr(c.CacheTTLPushedMS, DefaultCacheTTLPushedMS),
		failurePerMin:   intOr(c.FailureLimitPerMinute, DefaultFailureLimitPerMinute),
		failureBurst:    intOr(c.FailureBurst, DefaultFailureBurst),
		limiterNS:       c.limiterNS,
	}
	if s.sidecarURL == "" {
		s.sidecarURL = DefaultSidecarURL
	}
	if s.rolesClaim == "" {
		s.rolesClaim = DefaultRolesClaim
	}
	if s.testModePortals == nil {
		s.testModePortals = defaultTestModePortals
	}
	if s.keyHeaders == nil {
		s.keyHeaders = defaultKeyHeaders
	}
	if s.allowedModes == nil {
		s.allowedModes = defaultAllowedModes
	}
	s.secret, s.secretProblem = c.gatewaySecret()
	return s
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// gatewaySecret resolves the secret: config, then the environment variable,
// then the file the other variable names.
func (c *Config) gatewaySecret() ([]byte, error) {
	if c.GatewaySecret != "" {
		return []byte(c.GatewaySecret), nil
	}
	getenv := c.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if v := getenv(EnvGatewaySecret); v != "" {
		return []byte(v), nil
	}
	if path := getenv(EnvGatewaySecretFile); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			// The error names the path, never the content.
			return nil, fmt.Errorf("gateway_secret: reading $%s: %w", EnvGatewaySecretFile, err)
		}
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) == 0 {
			return nil, fmt.Errorf("gateway_secret: the file named by $%s is empty", EnvGatewaySecretFile)
		}
		return b, nil
	}
	// Under Kong the usual cause: nginx hands its workers, and so the
	// plugin server they start, only the variables an `env` directive
	// lists (kong/templates/nginx.lua renders nginx_main_env as one).
	return nil, fmt.Errorf("gateway_secret is not set: the plugin config has none and neither $%s nor $%s is in the plugin's environment; "+
		"under Kong, nginx passes the plugin only the variables kong.conf's nginx_main_env lists: set the variable for Kong and add "+
		"`nginx_main_env = %s` to kong.conf (or KONG_NGINX_MAIN_ENV=%s)", EnvGatewaySecret, EnvGatewaySecretFile, EnvGatewaySecret, EnvGatewaySecret)
}

// isVaultRef reports whether v is a Kong vault reference ({vault://…}).
// Kong resolves references only in fields its schema marks referenceable
// (kong/db/schema/init.lua; kong/pdk/vault.lua); the schema Kong builds
// from `keygate -dump` cannot mark any, so a reference reaches the plugin
// as the literal string. It is refused, never used as a secret.
func isVaultRef(v string) bool { return strings.HasPrefix(strings.TrimSpace(v), "{vault://") }

// vaultProblem is the error for a field that holds an unresolved reference.
func vaultProblem(field string) error {
	return fmt.Errorf("%s is a Kong vault reference ({vault://…}) that Kong does not resolve for a Go plugin "+
		"(references work only in fields a schema marks referenceable, which a plugin server's schema cannot): give the value itself"+
		" — for gateway_secret, $%s or $%s listed in kong.conf's nginx_main_env", field, EnvGatewaySecret, EnvGatewaySecretFile)
}

// Validate reports every problem of the configuration at once (errors.Join),
// or nil. It does not change c.
func (c *Config) Validate() error {
	_, err := compile(c.resolve())
	return err
}

// problems collects configuration errors.
type problems []error

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

func (p problems) err() error { return errors.Join(p...) }

// validateCommon checks what both roles need.
func validateCommon(s *settings, p *problems) {
	switch s.role {
	case RoleManage, RoleEnforce:
	case "":
		p.add("route_role is required: manage or enforce")
	default:
		p.add("route_role must be manage or enforce, not %q", s.role)
	}
	if s.secretProblem != nil {
		*p = append(*p, s.secretProblem)
	} else if isVaultRef(string(s.secret)) {
		*p = append(*p, vaultProblem("gateway_secret"))
	} else if len(s.secret) < MinGatewaySecretLen {
		p.add("gateway_secret must be at least %d bytes", MinGatewaySecretLen)
	}
	if s.failurePerMin < 0 || s.failurePerMin > MaxFailureLimit {
		p.add("failure_limit_per_minute must be 0..%d (0 turns the limiter off), not %d", MaxFailureLimit, s.failurePerMin)
	}
	if s.failureBurst < 1 || s.failureBurst > MaxFailureBurst {
		p.add("failure_burst must be 1..%d, not %d", MaxFailureBurst, s.failureBurst)
	}
}

// validateEnforce checks the enforce fields.
func validateEnforce(s *settings, p *problems) {
	if isVaultRef(s.sidecarURL) {
		*p = append(*p, vaultProblem("sidecar_url"))
	} else if isVaultRef(s.sidecarCAFile) {
		*p = append(*p, vaultProblem("sidecar_ca_file"))
	} else if _, err := parseSidecarEndpoint(s.sidecarURL, s.sidecarCAFile); err != nil {
		*p = append(*p, err)
	}
	if s.timeoutMS < 1 || s.timeoutMS > MaxSidecarTimeoutMS {
		p.add("sidecar_timeout_ms must be 1..%d (far below Kong's 60 s read timeout on the plugin socket), not %d", MaxSidecarTimeoutMS, s.timeoutMS)
	}
	if s.cacheTTLMS < 1 || s.cacheTTLMS > MaxCacheTTLMS {
		p.add("cache_ttl_ms must be 1..%d (the revocation bound), not %d", MaxCacheTTLMS, s.cacheTTLMS)
	}
	if s.cacheTTLPushed < 0 || s.cacheTTLPushed > MaxCacheTTLPushedMS {
		p.add("cache_ttl_pushed_ms must be 0..%d, not %d", MaxCacheTTLPushedMS, s.cacheTTLPushed)
	}
	if len(s.requiredScopes) == 0 {
		p.add("required_scopes is required and must not be empty when route_role is enforce")
	}
	for i, sc := range s.requiredScopes {
		if !apikey.ValidScope(sc) {
			p.add("required_scopes[%d] %q must match ^[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)+$", i, sc)
		}
	}
	if len(s.allowedModes) == 0 {
		p.add("allowed_modes must name at least one of LIVE, TEST")
	}
	for i, m := range s.allowedModes {
		if _, ok := apikey.ParseMode(m); !ok {
			p.add("allowed_modes[%d] must be LIVE or TEST, not %q", i, m)
		}
	}
	if len(s.keyHeaders) == 0 {
		p.add("key_headers must name at least one header")
	}
	for i, h := range s.keyHeaders {
		if !validHeaderName(h) {
			p.add("key_headers[%d] %q is not a valid header name", i, h)
		}
	}
}

// validateManage checks the manage fields (key material is checked while
// compiling, where it is parsed).
func validateManage(s *settings, p *problems) {
	if len(s.algorithms) == 0 {
		p.add("jwt_algorithms is required when route_role is manage, e.g. [\"RS256\"]")
	}
	if isVaultRef(string(s.jwtSecret)) {
		*p = append(*p, vaultProblem("jwt_secret"))
	}
	for i, k := range s.publicKeys {
		if isVaultRef(k) {
			*p = append(*p, vaultProblem(fmt.Sprintf("jwt_public_keys[%d]", i)))
		}
	}
	for field, v := range map[string]string{"jwks_url": s.jwksURL, "jwt_issuer": s.issuer, "jwt_audience": s.audience, "roles_claim": s.rolesClaim} {
		if isVaultRef(v) {
			*p = append(*p, vaultProblem(field))
		}
	}
	if len(s.jwtSecret) > 0 && string(s.jwtSecret) == string(s.secret) {
		// Anyone who can mint owner JWTs could then mint assertions too.
		p.add("jwt_secret must differ from the gateway secret")
	}
	if s.leewaySeconds < 0 || s.leewaySeconds > MaxLeewaySeconds {
		p.add("jwt_leeway_seconds must be 0..%d, not %d", MaxLeewaySeconds, s.leewaySeconds)
	}
	if s.jwksURL != "" {
		u, err := url.Parse(s.jwksURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			p.add("jwks_url must be an http or https URL")
		case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
			// Whoever is on the path of a plain-http JWKS fetch could
			// hand the gateway signing keys of their own.
			p.add("jwks_url must be https (plain http only to a loopback address)")
		}
	}
	for code, portal := range s.portalCodes {
		if isVaultRef(code) || isVaultRef(portal) {
			*p = append(*p, vaultProblem("portal_codes"))
		}
		if code == "" {
			p.add("portal_codes: an access code must not be empty")
		}
		if portal == "" {
			p.add("portal_codes: the portal name of an access code must not be empty")
		}
	}
	for i, name := range s.testModePortals {
		if name == "" {
			p.add("test_mode_portals[%d] must not be empty", i)
		}
	}
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// instance returns the built state, building it on first use. An invalid
// configuration is logged once, every problem of it, and stays invalid.
func (c *Config) instance() (*instance, error) {
	c.once.Do(func() {
		c.inst, c.err = compile(c.resolve())
		if c.inst != nil {
			if c.clock != nil {
				c.inst.clock = c.clock
			}
			if c.inst.role == RoleManage && len(c.inst.portals) == 0 {
				logger().Warn("keygate: portal_codes is empty; every management request of this route answers 403/4032")
			}
		}
		if c.err != nil {
			for _, e := range unjoin(c.err) {
				logger().Error("keygate: invalid plugin configuration; every request of this route answers 500/5000",
					"route_role", c.RouteRole, "problem", e.Error())
			}
		}
	})
	return c.inst, c.err
}

// problemList is every problem of a refused configuration on one line.
func problemList(err error) string {
	var b strings.Builder
	for i, e := range unjoin(err) {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
