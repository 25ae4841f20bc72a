package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"golang.org/x/time/rate"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/limiter"
)

// instance is the state built from one valid Config. It is immutable after
// compile returns, so concurrent requests share it without locks (the caches
// and clients it points to synchronise themselves).
type instance struct {
	role   string
	secret []byte // the gateway secret
	clock  func() time.Time

	// Failed-verification limiters (nil when off), shared process-wide:
	// ipFail counts 4010 (manage) or 4012 and 4034 (enforce) by client IP,
	// keyFail counts 4033/4035 by policyID + apiKeyId.
	ipFail   *limiter.Limiter
	keyFail  *limiter.Limiter
	policyID string // enforce: identifies required scopes + modes
	// blockedVerify is the budget of verifications for keys presented from
	// blocked addresses (enforce; nil when the limiter is off).
	blockedVerify *rate.Limiter

	// manage
	parser      *jwt.Parser
	keys        *keyring
	rolesClaim  string
	portals     []portalCode
	testPortals map[string]bool

	// enforce
	keyHeaders     []keyHeader
	requiredScopes []string
	allowedModes   apikey.Modes
	hide           bool
	cacheTTL       time.Duration
	cachePushed    time.Duration // cache_ttl_pushed_ms; 0: no stream
	stream         *pushStream   // the sidecar's invalidation stream, nil without
	timeout        time.Duration
	sidecar        verifier
	bearer         []byte // "Bearer <gateway secret>" for the verify call
	verifyTail     []byte // the verify body after the key
	cacheNS        string // the cache namespace: the sidecar URL
}

type portalCode struct {
	code []byte
	name string
}

// keyHeader is one configured header an API key may come in.
type keyHeader struct {
	lower  string // as Kong's get_headers names it
	name   string // as configured, for clear_header
	bearer bool   // Authorization: the value is "Bearer <key>"
}

func (in *instance) now() time.Time { return in.clock() }

// compile validates s and builds the instance; every problem is reported.
func compile(s settings) (*instance, error) {
	var p problems
	validateCommon(&s, &p)
	validatePublic(&s, &p)
	in := &instance{role: s.role, secret: s.secret, clock: time.Now}
	switch s.role {
	case RoleManage:
		validateManage(&s, &p)
		compileManage(&s, in, &p)
	case RoleEnforce:
		validateEnforce(&s, &p)
		if len(p) == 0 {
			compileEnforce(&s, in, &p)
		}
	}
	if len(p) > 0 {
		return nil, p.err()
	}
	switch s.role {
	case RoleManage:
		in.ipFail = failureLimiter(limManageIP, &s)
	case RoleEnforce:
		in.ipFail = failureLimiter(limEnforceIP, &s)
		in.keyFail = failureLimiter(limEnforceKey, &s)
		in.blockedVerify = blockedVerifyBudget(&s)
		sum := sha256.Sum256(in.verifyTail)
		in.policyID = hex.EncodeToString(sum[:8]) + "|"
	}
	return in, nil
}

func compileManage(s *settings, in *instance, p *problems) {
	kr, opts := compileJWT(s, p)
	in.keys = kr
	in.parser = jwt.NewParser(append(opts, jwt.WithTimeFunc(in.nowFunc))...)
	in.rolesClaim = s.rolesClaim
	for code, name := range s.portalCodes {
		in.portals = append(in.portals, portalCode{code: []byte(code), name: name})
	}
	in.testPortals = make(map[string]bool, len(s.testModePortals))
	for _, name := range s.testModePortals {
		in.testPortals[name] = true
	}
}

// nowFunc lets the parser see the instance clock even when a test replaces
// it after compile.
func (in *instance) nowFunc() time.Time { return in.clock() }

func compileEnforce(s *settings, in *instance, p *problems) {
	seen := map[string]bool{}
	for _, h := range s.keyHeaders {
		lower := strings.ToLower(h)
		if seen[lower] {
			continue
		}
		seen[lower] = true
		in.keyHeaders = append(in.keyHeaders, keyHeader{lower: lower, name: h, bearer: lower == "authorization"})
	}
	in.requiredScopes = s.requiredScopes
	var modes []apikey.Mode
	for _, m := range s.allowedModes {
		mode, _ := apikey.ParseMode(m)
		modes = append(modes, mode)
	}
	in.allowedModes = apikey.ModesOf(modes...)
	in.hide = s.hideCredentials
	in.cacheTTL = time.Duration(s.cacheTTLMS) * time.Millisecond
	in.timeout = time.Duration(s.timeoutMS) * time.Millisecond
	ep, err := parseSidecarEndpoint(s.sidecarURL, s.sidecarCAFile)
	if err != nil {
		*p = append(*p, err)
		return
	}
	in.sidecar = sidecarFor(s.sidecarURL, s.sidecarCAFile, ep)
	in.cacheNS = s.sidecarURL
	in.bearer = append([]byte("Bearer "), s.secret...)
	if s.cacheTTLPushed > 0 {
		in.cachePushed = time.Duration(s.cacheTTLPushed) * time.Millisecond
		in.stream = streamFor(in.cacheNS, ep, in.bearer)
	}
	in.verifyTail = verifyTail(s.requiredScopes, s.allowedModes)
}
