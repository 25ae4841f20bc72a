package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The pushed-revocation path through the real binaries (docs/REVOCATION.md):
// the plugin subscribes to the sidecar's invalidation stream, keeps a key's
// facts beyond cache_ttl_ms while the stream is live, and drops them the
// moment the sidecar pushes a revoke.

// adminRevoke revokes a key directly on the sidecar (not through the
// gateway, which a test may have cut off) and returns when it answered.
func (s *stack) adminRevoke(t *testing.T, ws, id string) time.Time {
	t.Helper()
	req, _ := http.NewRequest("DELETE", s.sidecarURL+"/web/v1/workspaces/"+ws+"/api-keys/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("revoke: %d", res.StatusCode)
	}
	return time.Now()
}

// adminSecret creates a key on the sidecar and returns its id and secret.
func (s *stack) adminSecret(t *testing.T) (id, secret string) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.sidecarURL+keysPath, strings.NewReader(`{"name":"pushed","scopes":["orders:read"]}`))
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := readResult(res)
	if r.status != 201 {
		t.Fatalf("admin create: %d %s", r.status, r.body)
	}
	return str(r.data["apiKeyId"]), str(r.data["secret"])
}

// cachedUnderStream makes the gateway cache the key's facts and waits until
// they are served past cache_ttl_ms (1 s in kong/kong.yml) without asking
// the sidecar: the stream is live and covers them.
func (s *stack) cachedUnderStream(t *testing.T, secret string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if r := s.call("GET", "/orders/7", map[string]string{"X-API-Key": secret}, ""); r.status != 200 {
			t.Fatalf("key refused: %d %s", r.status, r.body)
		}
		before := s.verifyTotal(t)
		time.Sleep(1500 * time.Millisecond)
		r := s.call("GET", "/orders/7", map[string]string{"X-API-Key": secret}, "")
		if r.status != 200 {
			t.Fatalf("key refused: %d %s", r.status, r.body)
		}
		if s.verifyTotal(t) == before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("facts never served past cache_ttl_ms: no live stream")
		}
	}
}

// deniedWithin polls the key every 2 ms from since and fails unless it is
// denied (4012) within d; it returns how long that took.
func (s *stack) deniedWithin(t *testing.T, secret string, since time.Time, d time.Duration) time.Duration {
	t.Helper()
	for {
		r := s.call("GET", "/orders/7", map[string]string{"X-API-Key": secret}, "")
		if r.status == 401 && str(r.json["code"]) == "4012" {
			return time.Since(since)
		}
		if r.status != 200 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if time.Since(since) > d {
			t.Fatalf("revoked key still allowed %s after the revoke", time.Since(since))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// notServedAfter checks that a request sent once the bound has passed since
// at is not allowed (a denial or a 5xx: the sidecar cannot be asked).
func (s *stack) notServedAfter(t *testing.T, secret string, at time.Time) {
	t.Helper()
	time.Sleep(time.Until(at.Add(1100 * time.Millisecond)))
	r := s.call("GET", "/orders/7", map[string]string{"X-API-Key": secret}, "")
	if r.status == 200 {
		t.Fatalf("cached facts still served %s after the stream stopped confirming them", time.Since(at))
	}
}

// With the stream live, a hot key costs no sidecar call past cache_ttl_ms,
// a revoke is honoured within 100 ms, and an allowed request still costs 4
// PDK calls.
func TestPushedRevocation(t *testing.T) {
	s := startStack(t)
	id, secret := s.adminSecret(t)
	s.cachedUnderStream(t, secret)
	if !external {
		r := s.call("GET", "/orders/7", map[string]string{"X-API-Key": secret}, "")
		if got := r.header.Get("X-Kongemu-Pdk-Calls"); got != "4" {
			t.Fatalf("PDK calls %s (%s), want 4", got, r.header.Get("X-Kongemu-Pdk-Methods"))
		}
	}
	if n := s.metric(t, "keygate_push_subscribers"); n < 1 {
		t.Fatalf("%d subscribers on the sidecar", n)
	}
	took := s.deniedWithin(t, secret, s.adminRevoke(t, workspace, id), 100*time.Millisecond)
	t.Logf("denied %s after the revoke was answered", took)
}

// A network stall (the proxy between gateway and sidecar stops forwarding):
// a revoke the stream cannot carry is honoured within 1 s all the same.
func TestPushedFallbackNetworkStall(t *testing.T) {
	s := startProxiedStack(t)
	id, secret := s.adminSecret(t)
	s.cachedUnderStream(t, secret)
	s.proxy.SetFrozen(true)
	stalled := time.Now()
	s.adminRevoke(t, workspace, id)
	s.notServedAfter(t, secret, stalled)
	s.proxy.SetFrozen(false)
	s.deniedWithin(t, secret, time.Now(), 3*time.Second)
}

// A frozen sidecar (SIGSTOP: its sockets accept, nothing answers): cached
// facts are not served past 1 s.
func TestPushedFallbackFrozenSidecar(t *testing.T) {
	s := startStack(t)
	if external {
		t.Skip("signals the local sidecar")
	}
	_, secret := s.adminSecret(t)
	s.cachedUnderStream(t, secret)
	if err := s.sidecar.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	defer s.sidecar.Process.Signal(syscall.SIGCONT)
	s.notServedAfter(t, secret, frozen)
	s.sidecar.Process.Signal(syscall.SIGCONT)
	s.cachedUnderStream(t, secret) // and it recovers by itself
}

// The stream lost (every connection to the sidecar cut, new ones refused)
// and the sidecar restarted: entries fall back to the 1 s rule, the plugin
// resubscribes by itself, the resubscription drops the cache, and a revoke
// after it is pushed again.
func TestPushedFallbackLostStreamAndRestart(t *testing.T) {
	s := startProxiedStack(t)
	id, secret := s.adminSecret(t)
	s.cachedUnderStream(t, secret)

	s.proxy.SetDown(true)
	lost := time.Now()
	s.notServedAfter(t, secret, lost)
	s.proxy.SetDown(false)
	s.cachedUnderStream(t, secret)
	if !external {
		// Kong shows the loss and the return at its default log_level
		// (notice): through kong.log, not the plugin's stderr.
		s.kongLogShows(t, "invalidation stream from the key service at", "lost (", "is live again")
	}

	// A resubscription drops every cached fact: the next request asks.
	s.proxy.SetDown(true)
	s.proxy.SetDown(false)
	time.Sleep(300 * time.Millisecond) // resubscribed (backoff ≤ 100 ms)
	before := s.verifyTotal(t)
	if r := s.call("GET", "/orders/7", map[string]string{"X-API-Key": secret}, ""); r.status != 200 {
		t.Fatalf("after resubscribing: %d %s", r.status, r.body)
	}
	if s.verifyTotal(t) != before+1 {
		t.Fatal("the resubscription did not drop the cached facts")
	}

	// The sidecar restarted.
	s.stopSidecar(t)
	stopped := time.Now()
	s.notServedAfter(t, secret, stopped)
	s.restartSidecar(t)
	s.cachedUnderStream(t, secret)
	s.deniedWithin(t, secret, s.adminRevoke(t, workspace, id), 100*time.Millisecond)
}

// kongLogShows waits up to 2 s for kongemu's log (Kong's error log) to hold
// every one of want.
func (s *stack) kongLogShows(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(s.dir, "kongemu.log"))
		missing := ""
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Kong's log lacks %q:\n%s", missing, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
