package plugin

import (
	"fmt"

	"golang.org/x/time/rate"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/limiter"
)

// MaxFailureKeys bounds what each failed-verification limiter tracks
// (client IPs or API key ids; about 250 bytes each): an attacker rotating
// addresses evicts the least recently failed ones instead of growing memory.
const MaxFailureKeys = 1 << 14

// Limiter kinds: one limiter per kind and settings, shared process-wide.
const (
	limManageIP   = "manage-ip"   // 4010 by client IP
	limEnforceIP  = "enforce-ip"  // 4012 and 4034 by client IP
	limEnforceKey = "enforce-key" // 4033/4035 by route policy + apiKeyId
)

// limiterRegistry holds the failed-verification limiters of the process,
// keyed by kind and settings: every instance (route) with the same limiter
// settings shares them, so a client blocked on one route is blocked on the
// others, and a config change (a new instance) keeps what was counted. The
// registry grows only with the number of distinct settings in the config.
var limiterRegistry sync.Map // string → *limiter.Limiter

// failureLimiter returns the shared limiter of kind for s; nil when the
// limiter is off (failure_limit_per_minute 0).
func failureLimiter(kind string, s *settings) *limiter.Limiter {
	if s.failurePerMin == 0 {
		return nil
	}
	k := fmt.Sprintf("%s|%d|%d|%s", kind, s.failurePerMin, s.failureBurst, s.limiterNS)
	if l, ok := limiterRegistry.Load(k); ok {
		return l.(*limiter.Limiter)
	}
	l, _ := limiterRegistry.LoadOrStore(k, limiter.New(s.failurePerMin, s.failureBurst, MaxFailureKeys))
	return l.(*limiter.Limiter)
}

// BlockedVerifyPerSecond is the budget of key verifications the plugin
// process still makes for clients whose address the failed-verification
// limiter blocks (a burst of as many): a well-formed key from a blocked
// address is verified within this budget, so that a legitimate client
// behind the same address (a NAT) can use a key created or rolled a moment
// ago; past it, such requests answer 429 without a lookup. It bounds what
// attackers at blocked addresses cost the key service, all of them
// together (docs/SECURITY.md).
const BlockedVerifyPerSecond = 20

var blockedRegistry sync.Map // limiter settings → *rate.Limiter

// blockedVerifyBudget returns the process's budget for s's limiter
// settings; nil when the limiter is off.
func blockedVerifyBudget(s *settings) *rate.Limiter {
	if s.failurePerMin == 0 {
		return nil
	}
	k := fmt.Sprintf("%d|%d|%s", s.failurePerMin, s.failureBurst, s.limiterNS)
	if l, ok := blockedRegistry.Load(k); ok {
		return l.(*rate.Limiter)
	}
	l, _ := blockedRegistry.LoadOrStore(k, rate.NewLimiter(BlockedVerifyPerSecond, BlockedVerifyPerSecond))
	return l.(*rate.Limiter)
}

// blockedNoBudget answers 429/4290 and reports true when the client's
// address is blocked and the budget of verifications for blocked
// addresses is spent; a blocked client within the budget goes on to the
// key service (its invalid keys are still answered 429 and counted).
func (r *call) blockedNoBudget(lim *limiter.Limiter, budget *rate.Limiter) bool {
	ip, ok := r.clientIP()
	if !ok {
		return false
	}
	key := ipLimitKey(ip)
	now := r.in.now()
	ra, blocked := lim.Blocked(key, now)
	if !blocked || budget.AllowN(now, 1) {
		return false
	}
	logger().Debug("keygate: request rejected", "code", "4290", "reason", "client blocked and the budget for blocked clients spent",
		"client", key, "request_id", r.reqID)
	r.tooMany(ra)
	return true
}

// clientIP asks Kong for the client IP (kong.client.get_forwarded_ip) at
// most once per request. ok is false when Kong did not give an address.
func (r *call) clientIP() (netip.Addr, bool) {
	if !r.ipAsked {
		r.ipAsked = true
		raw, err := r.k.forwardedIP()
		if err != nil {
			logger().Error("keygate: kong.client.get_forwarded_ip failed", "err", err.Error(), "request_id", r.reqID)
			r.kongLog(kongErr, "pdk", "keygate: PDK call kong.client.get_forwarded_ip failed (the client IP is treated as unknown): "+err.Error())
			return netip.Addr{}, false
		}
		ip, err := netip.ParseAddr(raw)
		if err != nil {
			logger().Warn("keygate: kong.client.get_forwarded_ip is not an address", "request_id", r.reqID)
			return netip.Addr{}, false
		}
		r.ip, r.ipOK = ip.Unmap().WithZone(""), true
	}
	return r.ip, r.ipOK
}

// ipLimitKey is the limiter key of a client address: the address, or the
// /64 of an IPv6 address (one subscriber's usual allocation, so rotating
// addresses inside it does not escape the limiter).
func ipLimitKey(ip netip.Addr) string {
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// ipBlocked answers 429/4290 and reports true when the client IP is
// blocked by lim. It asks Kong for the IP unless this request already did.
func (r *call) ipBlocked(lim *limiter.Limiter) bool {
	ip, ok := r.clientIP()
	if !ok {
		return false
	}
	key := ipLimitKey(ip)
	ra, blocked := lim.Blocked(key, r.in.now())
	if blocked {
		r.tooMany(ra, "reason", "client blocked by the failed-verification limiter", "client", key)
	}
	return blocked
}

// ipFailed records a failure of the client IP with lim.
func (r *call) ipFailed(lim *limiter.Limiter) {
	ip, ok := r.clientIP()
	if !ok {
		return
	}
	key := ipLimitKey(ip)
	if ra, blocked := lim.Fail(key, r.in.now()); blocked {
		logger().Warn("keygate: client blocked by the failed-verification limiter", "client", key,
			"retry_after_s", limiter.Seconds(ra), "role", r.in.role, "request_id", r.reqID)
	}
}

// keyBlocked answers 429/4290 and reports true when the API key id is
// blocked on this route's policy.
func (r *call) keyBlocked(apiKeyID string) bool {
	ra, blocked := r.in.keyFail.Blocked(r.in.keyLimitKey(apiKeyID), r.in.now())
	if blocked {
		r.tooMany(ra, "reason", "API key blocked by the failed-verification limiter", "api_key_id", apiKeyID)
	}
	return blocked
}

// keyFailed records a denial (4033/4035) of the API key id; a 4034 counts
// against the client address instead (denyIP).
func (r *call) keyFailed(apiKeyID string) {
	if ra, blocked := r.in.keyFail.Fail(r.in.keyLimitKey(apiKeyID), r.in.now()); blocked {
		logger().Warn("keygate: API key blocked by the failed-verification limiter", "api_key_id", apiKeyID,
			"retry_after_s", limiter.Seconds(ra), "request_id", r.reqID)
	}
}

// keyLimitKey scopes a key id's denials to the route policy (required
// scopes and modes) that denied it: a client calling a route its key lacks
// the scope for is throttled there, not on the routes its key may use.
func (in *instance) keyLimitKey(apiKeyID string) string { return in.policyID + apiKeyID }

// tooMany answers 429/4290 with Retry-After in whole seconds, logging attrs
// at debug level.
func (r *call) tooMany(retryAfter time.Duration, attrs ...any) {
	r.refuseWith(slog.LevelDebug, "keygate: request rejected", envelope.TooManyRequests, "", map[string][]string{
		"Retry-After": {strconv.Itoa(limiter.Seconds(retryAfter))},
	}, attrs...)
}
