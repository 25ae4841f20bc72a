package plugin

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
)

// testClock is a clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// limitedEnforce builds an enforce instance with the given limiter settings
// whose key service knows one key (scoped payment:read, LIVE).
func limitedEnforce(t *testing.T, ns string, clock *testClock, perMin, burst int, mut ...func(*Config)) (*Config, *oneKey, string) {
	t.Helper()
	cfg := enforceConfig("http://127.0.0.1:1", func(c *Config) {
		c.FailureLimitPerMinute, c.FailureBurst = intp(perMin), intp(burst)
		c.limiterNS, c.clock = ns, clock.now
	})
	for _, m := range mut {
		m(cfg)
	}
	in, err := cfg.instance()
	if err != nil {
		t.Fatal(err)
	}
	valid := apikey.NewSecret(apikey.Live).Reveal()
	svc := &oneKey{secret: valid, facts: &apikey.Facts{APIKeyID: apikey.NewID(apikey.Live), WorkspaceID: "ws1", Mode: apikey.Live,
		Scopes: []string{"payment:read"}}}
	in.sidecar = svc
	in.cacheNS = "limit-" + ns // a cache of its own: the fake service differs per test
	in.stream = nil            // no sidecar behind the fake service
	return cfg, svc, valid
}

func xKey(k string) http.Header { return http.Header{"X-Api-Key": {k}} }

// TestLimiterBlockedAddressNewValidKey: a legitimate client behind a
// blocked address (a NAT shared with a guesser) can use a key the plugin
// has never seen — created or rolled a moment ago; the guesses from the
// same address stay 429.
func TestLimiterBlockedAddressNewValidKey(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cfg, svc, valid := limitedEnforce(t, newLimiterNS(), clock, 60, 3)
	const nat = "198.51.100.8"
	for range 3 {
		wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), nat), envelope.InvalidKey)
	}
	wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), nat), envelope.TooManyRequests)
	e := serve(t, cfg, keyRequest(xKey(valid)), nat)
	if e.exited() {
		t.Fatalf("a valid key from a blocked address rejected: %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}
	if n := svc.asked.Load(); n != 5 {
		t.Fatalf("key service asked %d times, want 5", n)
	}
	wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), nat), envelope.TooManyRequests)
}

// TestLimiterEnforceIP: repeated invalid keys from one client IP are
// answered 429/4290 with Retry-After; a well-formed key from the blocked
// address is still verified within the budget for blocked clients (a valid
// one is allowed), and without the service once the budget is spent;
// another client's valid key is unaffected; the client recovers after
// Retry-After.
func TestLimiterEnforceIP(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cfg, svc, valid := limitedEnforce(t, newLimiterNS(), clock, 60, 3) // a token a second
	const attacker, other = "198.51.100.7", "203.0.113.9"

	for i := range 3 {
		e := serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), attacker)
		wantReject(t, e, envelope.InvalidKey)
		wantCalls(t, e, pdkGetHeaders, pdkFwdIP, pdkExit)
		if n := svc.asked.Load(); n != int64(i+1) {
			t.Fatalf("key service asked %d times after %d unknown keys", n, i+1)
		}
	}
	// Blocked: a new unknown key is still verified (within the budget for
	// blocked clients) but answered 429, and counted.
	e := serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), attacker)
	wantReject(t, e, envelope.TooManyRequests)
	wantCalls(t, e, pdkGetHeaders, pdkFwdIP, pdkExit)
	if ra := e.ClientRes.Headers.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	if n := svc.asked.Load(); n != 4 {
		t.Fatalf("key service asked %d times, want 4", n)
	}
	// The budget for blocked clients (BlockedVerifyPerSecond at once, the
	// clock stands still) runs out: then 429 without asking.
	before := svc.asked.Load()
	for range 2 * BlockedVerifyPerSecond {
		wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), attacker), envelope.TooManyRequests)
	}
	if n := svc.asked.Load() - before; n > BlockedVerifyPerSecond || n < BlockedVerifyPerSecond-2 {
		t.Fatalf("key service asked %d times for %d keys from a blocked address; budget %d", n, 2*BlockedVerifyPerSecond, BlockedVerifyPerSecond)
	}
	// Another client is unaffected. While someone is blocked, a request that needs the key service asks
	// for the IP first (5 calls); a cached key costs the usual 4.
	e = serve(t, cfg, keyRequest(xKey(valid)), other)
	if e.exited() {
		t.Fatalf("other client rejected: %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}
	wantCalls(t, e, pdkGetHeaders, pdkFwdIP, pdkAuth, pdkSetHeaders, pdkClearHeader)
	e = serve(t, cfg, keyRequest(xKey(valid)), other)
	wantCalls(t, e, pdkGetHeaders, pdkAuth, pdkSetHeaders, pdkClearHeader)
	// A cached valid key is decided as usual even for the blocked client:
	// no store lookup is involved.
	e = serve(t, cfg, keyRequest(xKey(valid)), attacker)
	if e.exited() {
		t.Fatalf("cached valid key rejected for the blocked client: %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}

	// Retry-After later the client may try again.
	clock.add(time.Second)
	e = serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), attacker)
	wantReject(t, e, envelope.InvalidKey)
	e = serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), attacker)
	wantReject(t, e, envelope.TooManyRequests)
	// Once every block has ended, valid traffic is back to 4 calls.
	clock.add(2 * time.Second)
	e = serve(t, cfg, keyRequest(xKey(valid)), other)
	wantCalls(t, e, pdkGetHeaders, pdkAuth, pdkSetHeaders, pdkClearHeader)
}

// TestLimiterNegativeCache: the same unknown key again and again is
// answered from the negative cache, still counted, and blocked.
func TestLimiterNegativeCache(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cfg, svc, _ := limitedEnforce(t, newLimiterNS(), clock, 60, 2)
	unknown := apikey.NewSecret(apikey.Live).Reveal()
	var codes []string
	for range 4 {
		e := serve(t, cfg, keyRequest(xKey(unknown)), "192.0.2.44")
		codes = append(codes, strings.Split(strings.Split(string(e.ClientRes.Body), `"code":"`)[1], `"`)[0])
	}
	if got := strings.Join(codes, ","); got != "4012,4012,4290,4290" {
		t.Errorf("codes %s, want 4012,4012,4290,4290", got)
	}
	if n := svc.asked.Load(); n != 1 {
		t.Errorf("key service asked %d times", n)
	}
}

// TestLimiterIPv6Prefix: addresses of one IPv6 /64 share a bucket.
func TestLimiterIPv6Prefix(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cfg, _, _ := limitedEnforce(t, newLimiterNS(), clock, 60, 2)
	for _, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"} {
		wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), ip), envelope.InvalidKey)
	}
	wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), "2001:db8:1:2::77"), envelope.TooManyRequests)
	wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), "2001:db8:1:3::1"), envelope.InvalidKey)
	// IPv4-mapped IPv6 is the IPv4 address.
	for range 2 {
		wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), "::ffff:192.0.2.8"), envelope.InvalidKey)
	}
	wantReject(t, serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), "192.0.2.8"), envelope.TooManyRequests)
}

func TestIPLimitKey(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"203.0.113.7":            "203.0.113.7",
		"2001:db8:a:b:c:d:e:f":   "2001:db8:a:b::/64",
		"2001:db8:a:b::1%eth0":   "2001:db8:a:b::/64",
		"::ffff:203.0.113.7":     "203.0.113.7",
		"fe80::1:2:3:4":          "fe80::/64",
		"2001:db8:ffff:ffff::ff": "2001:db8:ffff:ffff::/64",
	} {
		r := &call{k: &fakeKong{ip: raw}}
		ip, ok := r.clientIP()
		if !ok {
			t.Errorf("%s: not an address", raw)
			continue
		}
		if got := ipLimitKey(ip); got != want {
			t.Errorf("ipLimitKey(%s) = %s, want %s", raw, got, want)
		}
	}
	r := &call{k: &fakeKong{ip: "garbage"}}
	if _, ok := r.clientIP(); ok {
		t.Error("garbage accepted as an address")
	}
}

// TestLimiterKeyID: repeated denials of one key id on a route policy block
// that key there (without asking for the IP), not on a route whose policy
// it satisfies.
func TestLimiterKeyID(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	ns := newLimiterNS()
	denied, svc, valid := limitedEnforce(t, ns, clock, 60, 3, func(c *Config) { c.RequiredScopes = []string{"refund:write"} })
	for range 3 {
		e := serve(t, denied, keyRequest(xKey(valid)), "192.0.2.1")
		wantReject(t, e, envelope.ScopeDenied)
		wantCalls(t, e, pdkGetHeaders, pdkExit)
	}
	e := serve(t, denied, keyRequest(xKey(valid)), "192.0.2.2")
	wantReject(t, e, envelope.TooManyRequests)
	wantCalls(t, e, pdkGetHeaders, pdkExit)
	if ra := e.ClientRes.Headers.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q", ra)
	}
	if n := svc.asked.Load(); n != 1 {
		t.Errorf("key service asked %d times (facts are cached)", n)
	}
	// Same limiter settings, another policy: the key works there.
	allowed, svc2, _ := limitedEnforce(t, ns, clock, 60, 3)
	svc2.secret, svc2.facts = valid, svc.facts
	e = serve(t, allowed, keyRequest(xKey(valid)), "192.0.2.2")
	if e.exited() {
		t.Fatalf("key blocked on a route it may use: %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}
	wantCalls(t, e, pdkGetHeaders, pdkAuth, pdkSetHeaders, pdkClearHeader)
	clock.add(time.Second)
	wantReject(t, serve(t, denied, keyRequest(xKey(valid)), "192.0.2.1"), envelope.ScopeDenied)
}

// TestLimiterOff: failure_limit_per_minute 0 turns the limiter off: 4012
// costs 2 calls and nothing is ever 429.
func TestLimiterOff(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cfg, _, _ := limitedEnforce(t, newLimiterNS(), clock, 0, 1)
	for range 5 {
		e := serve(t, cfg, keyRequest(xKey(apikey.NewSecret(apikey.Live).Reveal())), "192.0.2.9")
		wantReject(t, e, envelope.InvalidKey)
		wantCalls(t, e, pdkGetHeaders, pdkExit)
	}
	m := manageConfig(func(c *Config) { c.FailureLimitPerMinute = intp(0) })
	for range 5 {
		e := serve(t, m, manageRequest("Bearer x.y.z", "/web/v1/workspaces/ws1/api-keys", "code-partner", nil), "192.0.2.9")
		wantReject(t, e, envelope.Unauthorized)
		wantCalls(t, e, pdkGetHeaders, pdkExit)
	}
}

// TestLimiterManage: bad JWTs from one client IP block it before any JWT
// is verified; other clients are unaffected.
func TestLimiterManage(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cfg := manageConfig(func(c *Config) {
		c.FailureLimitPerMinute, c.FailureBurst = intp(30), intp(2) // a token every 2 s
		c.clock = clock.now
	})
	good := "Bearer " + sign(t, jwt.SigningMethodRS256, keys().rsa, claims(), "")
	const path = "/web/v1/workspaces/ws1/api-keys"
	for _, bad := range []string{"Bearer not.a.jwt", ""} {
		e := serve(t, cfg, manageRequest(bad, path, "code-partner", nil), "198.51.100.20")
		wantReject(t, e, envelope.Unauthorized)
		wantCalls(t, e, pdkGetHeaders, pdkFwdIP, pdkExit)
	}
	// Blocked: even a valid token is not looked at.
	e := serve(t, cfg, manageRequest(good, path, "code-partner", nil), "198.51.100.20")
	wantReject(t, e, envelope.TooManyRequests)
	wantCalls(t, e, pdkGetHeaders, pdkFwdIP, pdkExit)
	if ra := e.ClientRes.Headers.Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After = %q, want 2", ra)
	}
	// Another client: proxied (one extra call while someone is blocked).
	e = serve(t, cfg, manageRequest(good, path, "code-partner", nil), "198.51.100.21")
	if e.exited() {
		t.Fatalf("other client rejected: %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}
	wantCalls(t, e, pdkGetHeaders, pdkFwdIP, pdkGetPath, pdkGetMethod, pdkSetHeaders, pdkClearHeader)
	// 4030 and 4032 are not counted: the token was valid.
	for range 3 {
		wantReject(t, serve(t, cfg, manageRequest(good, "/web/v1/workspaces/ws2/api-keys", "code-partner", nil), "198.51.100.22"), envelope.NotOwner)
	}
	clock.add(2 * time.Second)
	e = serve(t, cfg, manageRequest(good, path, "code-partner", nil), "198.51.100.20")
	if e.exited() {
		t.Fatalf("not recovered after Retry-After: %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}
	wantCalls(t, e, pdkGetHeaders, pdkGetPath, pdkGetMethod, pdkSetHeaders, pdkClearHeader)
}

// TestLimiterSharedBySettings: instances (routes) with the same limiter
// settings share what they counted; other settings have their own.
func TestLimiterSharedBySettings(t *testing.T) {
	t.Parallel()
	ns := newLimiterNS()
	s := func(perMin, burst int) *settings {
		return &settings{failurePerMin: perMin, failureBurst: burst, limiterNS: ns}
	}
	if a, b := failureLimiter(limEnforceIP, s(30, 20)), failureLimiter(limEnforceIP, s(30, 20)); a != b || a == nil {
		t.Error("same settings, different limiters")
	}
	if a, b := failureLimiter(limEnforceIP, s(30, 20)), failureLimiter(limEnforceIP, s(30, 21)); a == b {
		t.Error("different settings share a limiter")
	}
	if a, b := failureLimiter(limEnforceIP, s(30, 20)), failureLimiter(limManageIP, s(30, 20)); a == b {
		t.Error("manage and enforce share a limiter")
	}
	if failureLimiter(limEnforceIP, s(0, 20)) != nil {
		t.Error("limiter built with failure_limit_per_minute 0")
	}
}
