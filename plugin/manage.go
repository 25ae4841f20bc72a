package plugin

import (
	"crypto/subtle"
	"log/slog"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
)

// Management path: /web/v1/workspaces/{workspaceId}[/...].
const workspacesPrefix = "/web/v1/workspaces/"

// MaxWorkspaceIDLen bounds a workspace id (^[A-Za-z0-9._-]{1,64}$).
const MaxWorkspaceIDLen = 64

// PortalHeader is set by the portal's Nginx.
const PortalHeader = "X-PORTAL-ACCESS-CODE"

// identityTTL is the lifetime of the assertion handed to the sidecar.
const identityTTL = identity.MaxTTL / 2

// manage checks the caller of a key-management route, in the order of
// docs/CONTRACT.md §7: JWT (4010) → OWNER of the workspace in the path (4030) → portal
// (4032). Then it strips client X-Keygate-* headers and the caller's JWT
// and hands the sidecar a signed identity assertion.
func (r *call) manage(h map[string][]string) {
	in := r.in
	// While some client is blocked by the failed-verification limiter, ask
	// Kong who this one is before verifying anything: a blocked client gets
	// 429. Otherwise this costs nothing.
	if in.ipFail != nil && in.ipFail.AnyBlocked(in.now()) && r.ipBlocked(in.ipFail) {
		return
	}
	claims, why := in.verifyJWT(h["authorization"])
	if why != "" {
		if in.ipFail != nil && !r.preflight(h) {
			r.ipFailed(in.ipFail) // asks Kong for the client IP unless done above
		}
		if in.keys != nil && in.keys.jwks != nil {
			if msg, bad := in.keys.jwks.failing(); bad {
				r.kongLog(kongErr, "jwks|"+in.keys.jwks.shown, "keygate: JWKS "+in.keys.jwks.shown+" cannot be fetched ("+msg+
					"); its last keys stay in use at most "+(JWKSMaxAge+JWKSMaxStale).String()+" after they were fetched, then owner tokens answer "+outcome(envelope.Unauthorized))
			}
		}
		r.refuse(slog.LevelInfo, "keygate: management request rejected", envelope.Unauthorized, "reason", why)
		return
	}
	sub, _ := claims["sub"].(string)
	path, err := r.k.path()
	if err != nil {
		if notUTF8(err) { // e.g. /web/v1/workspaces/ws/api-keys/%ff: get_path decodes it
			r.kongLog(kongWarn, "utf8-path", "keygate: a request path is not valid UTF-8 once decoded (go-pdk cannot decode it); answered "+outcome(envelope.BadRequest))
			r.refuseWith(slog.LevelInfo, "keygate: request rejected", envelope.BadRequest, "request path must be valid UTF-8", nil,
				"reason", "request path is not valid UTF-8")
			return
		}
		r.internal("kong.request.get_path", err)
		return
	}
	ws, ok := workspaceFromPath(path)
	if !ok || !isOwner(claims[in.rolesClaim], ws) {
		r.refuse(slog.LevelInfo, "keygate: management request rejected", envelope.NotOwner, "sub", sub, "workspace_id", ws, "path_ok", ok)
		return
	}
	portal, ok := in.portal(h["x-portal-access-code"])
	if !ok {
		if len(in.portals) == 0 {
			msg := "keygate: portal_codes is empty on this manage route: every management request answers " + outcome(envelope.UnknownPortal)
			r.kongLog(kongWarn, msg, msg)
		}
		r.refuse(slog.LevelInfo, "keygate: management request rejected", envelope.UnknownPortal, "sub", sub, "workspace_id", ws)
		return
	}
	method, err := r.k.method()
	if err != nil {
		r.internal("kong.request.get_method", err)
		return
	}
	assertion, err := identity.Sign(in.secret, identity.Claims{
		Subject:       sub,
		WorkspaceID:   ws,
		Role:          identity.RoleOwner,
		Portal:        portal,
		RequestID:     r.reqID,
		AllowTestMode: in.testPortals[portal],
		Path:          path,
		Method:        method,
	}, in.now(), identityTTL)
	if err != nil {
		logger().Error("keygate: signing the identity assertion failed", "err", err.Error(), "request_id", r.reqID)
		r.kongLog(kongErr, "sign", "keygate: signing the identity assertion failed, answered "+outcome(envelope.Internal)+": "+err.Error())
		r.reject(envelope.Internal)
		return
	}
	// Client headers that spell a keygate header (reserved.go): the
	// identity header is replaced by set_headers below, any other one is
	// removed.
	if !r.clearReserved(h, isIdentityHeader) {
		return
	}
	up := map[string][]string{identity.Header: {assertion}}
	if r.genID {
		up["X-Request-Id"] = []string{r.reqID}
	}
	if err := r.k.setHeaders(up); err != nil {
		r.internal("kong.service.request.set_headers", err)
		return
	}
	// The sidecar needs the assertion, not the caller's JWT.
	if err := r.k.clearHeader("Authorization"); err != nil {
		r.internal("kong.service.request.clear_header", err)
		return
	}
	logger().Debug("keygate: management request proxied", "sub", sub, "workspace_id", ws, "portal", portal, "request_id", r.reqID)
}

// isIdentityHeader reports whether name is X-Keygate-Identity as spelled
// ('-', any case): set_headers replaces it.
func isIdentityHeader(name string) bool { return foldEqualDash(name, "x-keygate-identity") }

// preflight reports whether a request without a valid JWT is a CORS
// preflight (OPTIONS with Access-Control-Request-Method): a browser sends
// it without credentials before every cross-origin call, so it is no failed
// login and must not block the owner's address. It asks Kong for the method
// only on this failure path, and only when the header is there.
func (r *call) preflight(h map[string][]string) bool {
	if len(h["access-control-request-method"]) == 0 {
		return false
	}
	m, err := r.k.method()
	return err == nil && m == "OPTIONS"
}

func (r *call) internal(what string, err error) {
	logger().Error("keygate: PDK call failed", "call", what, "err", err.Error(), "request_id", r.reqID)
	r.kongLog(kongErr, "pdk", "keygate: PDK call "+what+" failed, answered "+outcome(envelope.Internal)+": "+err.Error())
	r.reject(envelope.Internal)
}

// verifyJWT checks the bearer JWT; the reason is "" when it is valid. The
// reason never contains the token.
func (in *instance) verifyJWT(auth []string) (jwt.MapClaims, string) {
	if len(auth) == 0 {
		return nil, "no Authorization header"
	}
	if len(auth) > 1 {
		return nil, "more than one Authorization header"
	}
	if len(auth[0]) > MaxTokenLen+len("Bearer ") {
		return nil, "token longer than 8 KiB"
	}
	tok, ok := identity.Bearer(auth[0])
	if !ok {
		return nil, "Authorization is not a Bearer token"
	}
	claims := jwt.MapClaims{}
	if _, err := in.parser.ParseWithClaims(tok, claims, in.keys.keyfunc); err != nil {
		return nil, err.Error()
	}
	if sub, _ := claims["sub"].(string); sub == "" {
		return nil, "token has no sub"
	}
	return claims, ""
}

// workspaceFromPath takes {workspaceId} from /web/v1/workspaces/{workspaceId}[/...].
// A path with percent-encoding, a backslash, an empty, "." or ".." segment
// names no workspace: what the plugin checks must be what the sidecar reads.
func workspaceFromPath(p string) (string, bool) {
	if strings.ContainsAny(p, "%\\") {
		return "", false
	}
	rest, ok := strings.CutPrefix(p, workspacesPrefix)
	if !ok {
		return "", false
	}
	ws, tail, _ := strings.Cut(rest, "/")
	if !apikey.ValidWorkspaceID(ws) {
		return "", false
	}
	segs := strings.Split(tail, "/")
	for i, seg := range segs {
		if seg == "." || seg == ".." || (seg == "" && i < len(segs)-1) {
			return "", false
		}
	}
	return ws, true
}

// isOwner reports whether the roles claim makes the caller OWNER of ws.
func isOwner(roles any, ws string) bool {
	m, ok := roles.(map[string]any)
	if !ok {
		return false
	}
	role, _ := m[ws].(string)
	return role == identity.RoleOwner
}

// portal maps the access code to a portal name; the comparison does not
// leak, by timing, which codes exist.
func (in *instance) portal(codes []string) (string, bool) {
	if len(codes) != 1 || codes[0] == "" {
		return "", false
	}
	got := []byte(codes[0])
	name, found := "", 0
	for _, p := range in.portals {
		if subtle.ConstantTimeCompare(p.code, got) == 1 {
			name = p.name
			found = 1
		}
	}
	return name, found == 1
}
