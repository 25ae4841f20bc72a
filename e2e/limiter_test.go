package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
)

// TestFailureLimiter drives the plugin's failed-verification limiter
// through the real stack with kong/kong.yml's defaults
// (failure_limit_per_minute 30, failure_burst 20): kongemu trusts
// 127.0.0.1 and takes the client IP from X-Forwarded-For.
func TestFailureLimiter(t *testing.T) {
	s := startStack(t)
	ws := keysPath
	owner := portal("alice", workspace, "OWNER", publicCode)
	r := s.call("POST", ws, owner, `{"name":"open","scopes":["orders:read"]}`)
	wantEnvelope(t, r, 201, "2000")
	valid := str(r.data["secret"])
	r = s.call("POST", ws, owner, `{"name":"payments","scopes":["payment:read"]}`)
	wantEnvelope(t, r, 201, "2000")
	wrongScope := str(r.data["secret"])

	t.Run("denials of one key id", func(t *testing.T) {
		for range 20 {
			r := s.call("GET", "/orders/1", from("192.0.2.50", "X-API-Key", wrongScope), "")
			wantEnvelope(t, r, 403, "4033")
			wantPDK(t, r, 2)
		}
		// The key id is blocked on this route, whatever the client IP,
		// without asking Kong for the IP.
		for _, ip := range []string{"192.0.2.50", "192.0.2.51"} {
			r := s.call("GET", "/orders/1", from(ip, "X-API-Key", wrongScope), "")
			wantEnvelope(t, r, 429, "4290")
			wantRetryAfter(t, r, 2)
			wantPDK(t, r, 2)
		}
		// Other keys are unaffected.
		r := s.call("GET", "/orders/1", from("192.0.2.50", "X-API-Key", valid), "")
		wantEnvelope(t, r, 200, "")
	})

	t.Run("invalid keys from one client IP", func(t *testing.T) {
		const attacker, other = "198.51.100.66", "203.0.113.10"
		r := s.call("GET", "/orders/1", from(other, "X-API-Key", valid), "")
		wantEnvelope(t, r, 200, "")
		before := s.verifyTotal(t)
		for range 20 {
			r := s.call("GET", "/orders/1", from(attacker, "X-API-Key", apikey.NewSecret(apikey.Live).Reveal()), "")
			wantEnvelope(t, r, 401, "4012")
			wantPDK(t, r, 3) // get_headers, get_forwarded_ip (to count the failure), exit
		}
		if got := s.verifyTotal(t); got != before+20 {
			t.Fatalf("sidecar verified %d keys for 20 unknown ones", got-before)
		}
		// Blocked: every guess is answered 429. A well-formed key is still
		// verified (within the plugin's budget for blocked clients, 20 at
		// once), so the sidecar is asked, but a guess never gets its 4012.
		var retry int
		for i := range 10 {
			key := apikey.NewSecret(apikey.Live).Reveal()
			if i == 9 {
				key = apikey.NewSecret(apikey.Test).Reveal()
			}
			r := s.call("GET", "/orders/1", from(attacker, "Authorization", "Bearer "+key), "")
			wantEnvelope(t, r, 429, "4290")
			wantPDK(t, r, 3)
			retry = wantRetryAfter(t, r, 2)
		}
		if got := s.verifyTotal(t); got > before+30 {
			t.Fatalf("the sidecar was asked %d times for 10 keys of a blocked client", got-before-20)
		}
		// Another client's valid key: 200. The first request may need the
		// sidecar (then, while someone is blocked, the plugin asks for the
		// IP first: 5 calls); the next one is cached: the normal 4.
		r = s.call("GET", "/orders/1", from(other, "X-API-Key", valid), "")
		wantEnvelope(t, r, 200, "")
		if n := pdkCalls(r); !external && n != 4 && n != 5 {
			t.Fatalf("PDK calls %d (%s)", n, r.header.Get("X-Kongemu-Pdk-Methods"))
		}
		r = s.call("GET", "/orders/1", from(other, "X-API-Key", valid), "")
		wantEnvelope(t, r, 200, "")
		wantPDK(t, r, 4)
		// Another client's unknown key is an ordinary 4012.
		r = s.call("GET", "/orders/1", from(other, "X-API-Key", apikey.NewSecret(apikey.Live).Reveal()), "")
		wantEnvelope(t, r, 401, "4012")

		// After Retry-After the client is served again.
		time.Sleep(time.Duration(retry)*time.Second + 100*time.Millisecond)
		r = s.call("GET", "/orders/1", from(attacker, "X-API-Key", valid), "")
		wantEnvelope(t, r, 200, "")
		r = s.call("GET", "/orders/1", from(attacker, "X-API-Key", apikey.NewSecret(apikey.Live).Reveal()), "")
		wantEnvelope(t, r, 401, "4012")
	})

	t.Run("a leaked key tried outside its whitelist does not lock out its owner", func(t *testing.T) {
		r := s.call("POST", ws, owner, `{"name":"whitelisted","scopes":["orders:read"],"ipWhitelist":["203.0.113.0/24"]}`)
		wantEnvelope(t, r, 201, "2000")
		wl := str(r.data["secret"])
		const thief, ownerIP = "198.51.100.90", "203.0.113.20"
		for range 20 {
			wantEnvelope(t, s.call("GET", "/orders/1", from(thief, "X-API-Key", wl), ""), 403, "4034")
		}
		r = s.call("GET", "/orders/1", from(thief, "X-API-Key", wl), "")
		wantEnvelope(t, r, 429, "4290") // the thief's address is blocked
		for range 5 {
			wantEnvelope(t, s.call("GET", "/orders/1", from(ownerIP, "X-API-Key", wl), ""), 200, "")
		}
	})

	t.Run("a valid key behind a blocked address keeps working", func(t *testing.T) {
		const shared = "198.51.100.99" // a NAT: one attacker, one honest client
		r := s.call("GET", "/orders/1", from(shared, "X-API-Key", valid), "")
		wantEnvelope(t, r, 200, "")
		for range 20 {
			s.call("GET", "/orders/1", from(shared, "X-API-Key", apikey.NewSecret(apikey.Live).Reveal()), "")
		}
		wantEnvelope(t, s.call("GET", "/orders/1", from(shared, "X-API-Key", apikey.NewSecret(apikey.Live).Reveal()), ""), 429, "4290")
		// The honest client's key was valid when last asked: its lookups go
		// through even after the plugin's cache entry expired.
		for range 3 {
			time.Sleep(400 * time.Millisecond)
			wantEnvelope(t, s.call("GET", "/orders/1", from(shared, "X-API-Key", valid), ""), 200, "")
		}
		// A key created a moment ago, never seen by the plugin, works from
		// the blocked address too; the guesses there are still 429.
		r = s.call("POST", ws, owner, `{"name":"fresh","scopes":["orders:read"]}`)
		wantEnvelope(t, r, 201, "2000")
		fresh := str(r.data["secret"])
		wantEnvelope(t, s.call("GET", "/orders/1", from(shared, "X-API-Key", fresh), ""), 200, "")
		wantEnvelope(t, s.call("GET", "/orders/1", from(shared, "X-API-Key", apikey.NewSecret(apikey.Live).Reveal()), ""), 429, "4290")
	})

	t.Run("bad JWTs from one client IP", func(t *testing.T) {
		const attacker, other = "198.51.100.77", "203.0.113.11"
		bad := []string{"Bearer not.a.jwt", "Bearer " + mintJWT("alice", workspace, "OWNER") + "x", "", "Basic YWxpY2U6cHc="}
		for i := range 20 {
			h := from(attacker, "X-PORTAL-ACCESS-CODE", publicCode)
			if b := bad[i%len(bad)]; b != "" {
				h["Authorization"] = b
			}
			r := s.call("GET", ws, h, "")
			wantEnvelope(t, r, 401, "4010")
			wantPDK(t, r, 3)
		}
		before := s.metric(t, `keygate_management_requests_total{code="2000"}`)
		// Blocked: even the owner's valid token is not looked at, and
		// nothing reaches the sidecar.
		for range 3 {
			r := s.call("GET", ws, from(attacker, "Authorization", owner["Authorization"], "X-PORTAL-ACCESS-CODE", publicCode), "")
			wantEnvelope(t, r, 429, "4290")
			wantPDK(t, r, 3)
			wantRetryAfter(t, r, 2)
		}
		if got := s.metric(t, `keygate_management_requests_total{code="2000"}`); got != before {
			t.Fatalf("a blocked client reached the sidecar %d times", got-before)
		}
		// Another client is served.
		r := s.call("GET", ws, from(other, "Authorization", owner["Authorization"], "X-PORTAL-ACCESS-CODE", publicCode), "")
		wantEnvelope(t, r, 200, "2000")
		// The enforce route keeps its own count: the same IP is not
		// blocked there.
		r = s.call("GET", "/orders/1", from(attacker, "X-API-Key", valid), "")
		wantEnvelope(t, r, 200, "")

		time.Sleep(2100 * time.Millisecond)
		r = s.call("GET", ws, from(attacker, "Authorization", owner["Authorization"], "X-PORTAL-ACCESS-CODE", publicCode), "")
		wantEnvelope(t, r, 200, "2000")
	})
}

// from returns headers name/value pairs plus X-Forwarded-For: ip (kongemu
// trusts the test client, 127.0.0.1, for it).
func from(ip string, kv ...string) map[string]string {
	h := map[string]string{"X-Forwarded-For": ip}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = kv[i+1]
	}
	return h
}

// wantEnvelope checks the status and the envelope code; code "" means the
// upstream answered (no envelope).
func wantEnvelope(t *testing.T, r result, status int, code string) {
	t.Helper()
	if r.status != status || str(r.json["code"]) != code {
		t.Fatalf("got %d %s, want %d %s: %.300s", r.status, str(r.json["code"]), status, code, r.body)
	}
	if code == "" {
		return
	}
	if r.header.Get("Content-Type") != "application/json" || r.json["version"] != "1.3.0" || r.json["success"] != (status < 400) {
		t.Fatalf("not an envelope: %v %.300s", r.header, r.body)
	}
	if status >= 400 {
		rid := str(r.json["requestId"])
		if rid == "" || r.header.Get("X-Request-Id") != rid || r.json["data"] != nil {
			t.Fatalf("rejection envelope: %v %.300s", r.header, r.body)
		}
	}
	if code == "4290" && r.json["message"] != "Too many requests" {
		t.Fatalf("429 message %q", r.json["message"])
	}
}

func pdkCalls(r result) int {
	n, err := strconv.Atoi(r.header.Get("X-Kongemu-Pdk-Calls"))
	if err != nil {
		return -1
	}
	return n
}

func wantPDK(t *testing.T, r result, want int) {
	t.Helper()
	if external {
		return // only kongemu counts PDK calls
	}
	if got := pdkCalls(r); got != want {
		t.Fatalf("PDK calls %d (%s), want %d", got, r.header.Get("X-Kongemu-Pdk-Methods"), want)
	}
}

// wantRetryAfter checks Retry-After is whole seconds in 1..max and returns it.
func wantRetryAfter(t *testing.T, r result, max int) int {
	t.Helper()
	ra := r.header.Get("Retry-After")
	n, err := strconv.Atoi(ra)
	if err != nil || n < 1 || n > max {
		t.Fatalf("Retry-After %q, want whole seconds 1..%d", ra, max)
	}
	return n
}

// metric reads one sample of the sidecar's /metrics (0 when absent).
func (s *stack) metric(t *testing.T, sample string) int {
	t.Helper()
	var n int
	s.scanMetrics(t, func(name string, v int) {
		if name == sample {
			n = v
		}
	})
	return n
}

// verifyTotal is the sum of keygate_verify_total over every code: how many
// keys the sidecar verified.
func (s *stack) verifyTotal(t *testing.T) int {
	t.Helper()
	var n int
	s.scanMetrics(t, func(name string, v int) {
		if strings.HasPrefix(name, "keygate_verify_total{") {
			n += v
		}
	})
	return n
}

func (s *stack) scanMetrics(t *testing.T, each func(name string, v int)) {
	t.Helper()
	res, err := s.http().Get(s.sidecarURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(res.Body)
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.Atoi(val)
		if err != nil {
			continue
		}
		each(name, v)
	}
	if res.StatusCode != 200 {
		t.Fatal(fmt.Errorf("GET /metrics: %d", res.StatusCode))
	}
}
