package plugin

import (
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
)

// Upstream headers set on an allowed request.
const (
	HeaderAPIKeyID    = "X-Api-Key-Id"
	HeaderWorkspaceID = "X-Workspace-Id"
	HeaderAPIKeyMode  = "X-Api-Key-Mode"
)

// keyStatus is what the request presents as an API key.
type keyStatus uint8

const (
	keyNone      keyStatus = iota // no key header
	keyOne                        // one key (maybe repeated identically)
	keyAmbiguous                  // two different values
)

// findKey reads the key from the configured headers (never the query
// string). Authorization counts only as "Bearer <value>"; another scheme is
// not a key. An empty value is no key. It returns the key and the headers
// that carried it (lower-case names from in.keyHeaders).
func (in *instance) findKey(h map[string][]string) (string, keyStatus, []int) {
	var key string
	var from []int
	st := keyNone
	for i, kh := range in.keyHeaders {
		for _, v := range h[kh.lower] {
			if kh.bearer {
				tok, ok := identity.Bearer(v)
				if !ok {
					continue
				}
				v = tok
			} else {
				v = strings.TrimSpace(v)
				if v == "" {
					continue
				}
			}
			switch {
			case st == keyNone:
				key, st = v, keyOne
			case v != key:
				st = keyAmbiguous
			}
			if len(from) == 0 || from[len(from)-1] != i {
				from = append(from, i)
			}
		}
	}
	return key, st, from
}

// enforce decides a product-traffic request, in the order of docs/CONTRACT.md §6.1:
// key present (4011) → well formed and known, active, unexpired (4012) →
// mode (4035) → scopes (4033) → client IP (4034).
func (r *call) enforce(h map[string][]string) {
	in := r.in
	key, st, from := in.findKey(h)
	switch st {
	case keyNone:
		r.refuse(slog.LevelDebug, "keygate: request rejected", envelope.KeyRequired)
		return
	case keyAmbiguous:
		r.refuse(slog.LevelDebug, "keygate: request rejected", envelope.InvalidKey, "reason", "different keys presented")
		return
	}
	if _, ok := apikey.ParseSecret(key); !ok {
		r.refuse(slog.LevelDebug, "keygate: request rejected", envelope.InvalidKey, "reason", "malformed key or bad checksum")
		return
	}
	ck, facts, cached, known := in.cached(key)
	if in.stream != nil {
		// A change of the invalidation stream's state, said once through
		// kong.log by the request that finds it (none in steady state).
		if rep := in.stream.takeReport(); rep != nil {
			r.kongLog(rep.level, rep.subject, rep.msg)
		}
	}
	if !cached {
		// The key service is about to be asked. While some client is
		// blocked, ask Kong who this one is first. A key that was valid
		// when last asked goes through; any other well-formed key from a
		// blocked address is verified within a process-wide budget
		// (BlockedVerifyPerSecond), so that a legitimate client behind the
		// same address (a NAT) can use a key created or rolled a moment
		// ago, while guesses stay answered 429 (invalid() below) and cost
		// the key service at most the budget. Otherwise this costs nothing.
		if !known && in.ipFail != nil && in.ipFail.AnyBlocked(in.now()) && r.blockedNoBudget(in.ipFail, in.blockedVerify) {
			return
		}
		var err error
		if facts, err = in.fetch(ck, key, r.reqID); err != nil {
			r.sidecarFailure(err)
			return
		}
	}
	if facts == nil {
		r.invalid(nil)
		return
	}
	// A key id blocked on this route's policy is 429 (one atomic load while
	// no key id is blocked).
	if in.keyFail != nil && in.keyFail.AnyBlocked(in.now()) && r.keyBlocked(facts.APIKeyID) {
		return
	}
	now := in.now()
	d := apikey.Decide(facts, &apikey.Request{
		Now:            now.Unix(),
		RequiredScopes: in.requiredScopes,
		AllowedModes:   in.allowedModes,
	})
	if d == apikey.Allow && len(facts.IPWhitelist) > 0 {
		// Only now ask Kong for the client IP: a key without a whitelist
		// costs no extra round trip.
		d = r.checkIP(facts)
	}
	switch d {
	case apikey.Allow:
		r.allow(facts, from, h)
	case apikey.DenyInvalid:
		r.invalid(facts)
	case apikey.DenyMode, apikey.DenyScope:
		r.denyKey(d, facts)
	case apikey.DenyIP:
		r.denyIP(facts)
	default:
		r.invalid(facts)
	}
}

func (r *call) checkIP(f *apikey.Facts) apikey.Decision {
	ip, ok := r.clientIP()
	if !ok || !apikey.CheckIP(f.IPWhitelist, ip) {
		return apikey.DenyIP
	}
	return apikey.Allow
}

// invalid answers 4012 for a key the service does not accept (f is nil) or
// one that expired since (f is its facts). The limiter counts it against
// the client IP — one more PDK call, on this failure path only — and a
// client already blocked gets 429 instead.
func (r *call) invalid(f *apikey.Facts) {
	if lim := r.in.ipFail; lim != nil {
		if r.ipBlocked(lim) {
			return
		}
		r.ipFailed(lim)
	}
	r.deny(apikey.DenyInvalid, f)
}

// denyIP answers 4034 and counts it against the client address, not the
// key: a leaked key tried from outside its whitelist must not lock its
// owner out (the address is known already: checkIP asked it).
func (r *call) denyIP(f *apikey.Facts) {
	if lim := r.in.ipFail; lim != nil {
		if r.ipBlocked(lim) {
			return
		}
		r.ipFailed(lim)
	}
	r.deny(apikey.DenyIP, f)
}

// denyKey answers a denial of a known key that does not depend on the
// client (4033/4035: every request of this key on this route's policy is
// denied alike) and counts it against the key id on that policy.
func (r *call) denyKey(d apikey.Decision, f *apikey.Facts) {
	if r.in.keyFail != nil {
		r.keyFailed(f.APIKeyID)
	}
	r.deny(d, f)
}

// deny answers the code of decision d (envelope.DenyCode).
func (r *call) deny(d apikey.Decision, f *apikey.Facts) {
	code := envelope.DenyCode(d)
	if f != nil {
		r.refuse(slog.LevelInfo, "keygate: request rejected", code, "api_key_id", f.APIKeyID, "workspace_id", f.WorkspaceID)
	} else {
		r.refuse(slog.LevelDebug, "keygate: request rejected", code, "reason", "unknown, revoked or expired key")
	}
}

// allow authenticates the credential, sets the upstream headers in one call
// and removes the credential header: 3 PDK calls, and one clear_header per
// client header that spells a keygate header otherwise (reserved.go).
func (r *call) allow(f *apikey.Facts, from []int, h map[string][]string) {
	if err := r.k.authenticate(f.APIKeyID); err != nil {
		r.internal("kong.client.authenticate", err)
		return
	}
	up := map[string][]string{
		HeaderAPIKeyID:    {f.APIKeyID},
		HeaderWorkspaceID: {f.WorkspaceID},
		HeaderAPIKeyMode:  {f.Mode.String()},
	}
	if r.genID {
		up["X-Request-Id"] = []string{r.reqID}
	}
	if err := r.k.setHeaders(up); err != nil {
		r.internal("kong.service.request.set_headers", err)
		return
	}
	if !r.clearReserved(h, replacedUpstream) {
		return
	}
	if r.in.hide {
		for _, i := range from {
			if err := r.k.clearHeader(r.in.keyHeaders[i].name); err != nil {
				r.internal("kong.service.request.clear_header", err)
				return
			}
		}
		if !r.clearKeySpellings(h) {
			return
		}
	}
	logger().Debug("keygate: request allowed", "api_key_id", f.APIKeyID, "workspace_id", f.WorkspaceID, "request_id", r.reqID)
}

// sidecarFailure answers a failed verify: never fail open.
func (r *call) sidecarFailure(err error) {
	in := r.in
	switch {
	case errors.Is(err, errTimeout):
		r.kongLog(kongErr, "sidecar|"+in.cacheNS, "keygate: key service at "+in.cacheNS+" did not answer within sidecar_timeout_ms "+
			strconv.FormatInt(in.timeout.Milliseconds(), 10)+"; answered "+outcome(envelope.Timeout))
		r.refuse(slog.LevelWarn, "keygate: key service timeout", envelope.Timeout)
	default:
		r.kongLog(kongErr, "sidecar|"+in.cacheNS, "keygate: key service at "+in.cacheNS+" unavailable; answered "+outcome(envelope.Unavailable)+": "+err.Error())
		r.refuse(slog.LevelWarn, "keygate: key service unavailable", envelope.Unavailable, "err", err.Error())
	}
}

// cached returns the cached facts of a well-formed key, whether there were
// fresh ones (nil facts: the key is not valid — unknown, revoked, expired),
// and whether the key was valid when last asked.
func (in *instance) cached(key string) (ck cacheKey, f *apikey.Facts, fresh, known bool) {
	ck = cacheKey{ns: in.cacheNS, hash: apikey.Hash(key)}
	if in.stream != nil {
		in.stream.touch() // one atomic load once it runs
	}
	f, fresh, known = sharedCache.get(ck, in.now(), in.stream)
	return ck, f, fresh, known
}

// fetch asks the sidecar about a key and caches the answer.
func (in *instance) fetch(ck cacheKey, key, requestID string) (*apikey.Facts, error) {
	var epoch, seq uint64
	if in.stream != nil {
		epoch, seq = in.stream.covered()
	}
	asked := in.now()
	f, maxAge, err := in.sidecar.verify(key, requestID, in.verifyTail, in.bearer, in.timeout)
	if err != nil {
		return nil, err
	}
	ttl := in.cacheTTL
	if maxAge > 0 && maxAge < ttl {
		ttl = maxAge // the sidecar's own view may lag: stay within the bound
	}
	sharedCache.put(ck, f, asked, ttl, in.cachePushed, in.stream, epoch, seq, in.now())
	return f, nil
}
